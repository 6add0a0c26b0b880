"""The launch config: one YAML file -> :class:`LaunchConfig` (unknown keys are errors)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sglang_ppd.core.config import StrictModel
from sglang_ppd.core.costmodel import DEFAULT_PROFILE


class EmulatorSection(StrictModel):
    time_scale: float = Field(1.0, ge=0)
    """Wall seconds per modelled second: 1 is real time; 0 leaves only the software overhead."""
    tbt_budget_ms: float | None = Field(None, gt=0)
    """Decode workers: cap on mixed (prefill chunk + decode) iterations while decodes run;
    default: the router's TPOT SLO, as in the simulator."""
    kv_capacity_tokens: int | None = Field(None, gt=0)
    chunked_prefill_size: int | None = Field(None, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    """More ``sglang-ppd emulate`` flags for every worker."""


class SglangSection(StrictModel):
    model_path: str | None = None
    python: str = "python"
    """Interpreter of the environment that has sglang (and sglang_ppd) installed."""
    prefill_gpus: list[str] | None = None
    """CUDA_VISIBLE_DEVICES per prefill server (e.g. ["0", "1"]); default: 0..num_prefill-1."""
    decode_gpus: list[str] | None = None
    """Per decode server; default: the GPUs after the prefill servers'."""
    tp_size: int = Field(1, ge=1)
    transfer_backend: str = "mooncake"
    ib_device: str | None = None
    mem_fraction_static: float | None = Field(None, gt=0, lt=1)
    kv_events: bool = True
    """Publish KV events (``--kv-events-config``) so the router's prefix index is exact."""
    load_publish: bool = False
    """Pass ``--load-publish-endpoint`` (SGLang releases newer than 0.5.17 only)."""
    zmq_port_base: int = Field(32000, gt=0, lt=65000)
    """KV-event / replay / LoadStat / telemetry ports are allocated upwards from here."""
    extra_args: list[str] = Field(default_factory=list)
    prefill_extra_args: list[str] = Field(default_factory=list)
    decode_extra_args: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    """``--ppd-*`` options for ``python -m sglang_ppd.worker`` decode servers."""


class LaunchConfig(StrictModel):
    backend: Literal["emulated", "sglang"] = "emulated"
    host: str = "127.0.0.1"
    num_prefill: int = Field(2, ge=1)
    num_decode: int = Field(2, ge=1)
    base_port: int = Field(31000, gt=0, lt=65000)
    """Worker HTTP and bootstrap ports are allocated upwards from here."""
    profile: str = DEFAULT_PROFILE
    """Cost profile: paces emulated workers and is what the router's policy estimates with."""
    page_size: int | None = Field(None, gt=0)
    """KV page size (``--page-size``); default: the profile's."""
    link_bandwidth_gb_s: float = Field(50.0, gt=0)
    """P->D KV link (GB/s): emulated workers' link, and what the router's policy assumes."""
    ppd_decode: bool = True
    """Decode servers honour ``do_local_prefill`` (emulated ``--ppd``; real: the worker extension)."""
    monitor: bool = True
    startup_timeout_s: float | None = Field(None, gt=0)
    """Default: 60 s emulated, 1200 s sglang (model loading, CUDA graphs)."""
    log_dir: str | None = None
    """Child logs; default: a fresh temporary directory (printed at start)."""
    router: dict[str, Any] = Field(default_factory=dict)
    """``sglang-ppd router`` config (RouterConfig) except ``workers``, which launch fills in."""
    emulator: EmulatorSection = Field(default_factory=lambda: EmulatorSection.model_validate({}))
    sglang: SglangSection = Field(default_factory=lambda: SglangSection.model_validate({}))
