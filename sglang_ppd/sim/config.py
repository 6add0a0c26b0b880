"""The simulated cluster, from ``--config CONFIG`` YAML (every key optional; unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sglang_ppd.core.config import StrictModel, load_yaml
from sglang_ppd.core.costmodel import DEFAULT_PROFILE
from sglang_ppd.sim.replicas import Balance


class SimConfig(StrictModel):
    """Defaults: SGLang PD with 2 prefill and 2 decode H100s serving Llama-3.1-8B, 50 GB/s links."""

    num_prefill: int = Field(default=2, ge=1)
    num_decode: int = Field(default=2, ge=1)
    profile: str = Field(default=DEFAULT_PROFILE, description="cost profile name or YAML path")
    link_gbytes_per_s: float = Field(default=50.0, gt=0, description="KV link bandwidth, GB/s (1e9 bytes/s)")
    link_topology: Literal["per_prefill", "per_pair", "shared"] = Field(
        default="per_prefill",
        description="per_prefill: each P worker's NIC is one FIFO link (a 400 Gb/s NIC per GPU); "
        "per_pair: one link per P->D pair; shared: one link for the whole cluster",
    )
    publish_period_ms: float = Field(
        default=100.0,
        gt=0,
        description="workers publish load telemetry this often (router sees it that stale)",
    )
    decode_cache: bool | None = Field(
        default=None, description="D radix-cache retention; None follows the policy's needs_decode_cache"
    )
    prefill_cache: bool = Field(default=True, description="P radix cache (SGLang's default)")
    tbt_budget_ms: float | None = Field(
        default=None, gt=0, description="max mixed iteration on D while decodes run; None: the TPOT SLO"
    )
    min_chunk_len: int = Field(
        default=64, ge=1, description="local-prefill tokens that run even over the TBT budget"
    )
    kv_capacity_tokens: int | None = Field(
        default=None, gt=0, description="override the profile KV pool per worker"
    )
    max_new_tokens: int | None = Field(
        default=None,
        gt=0,
        description="max_new_tokens the router sees; None: each request's true output length "
        "(a client that sets max_tokens exactly; traces carry no max_tokens)",
    )
    chunked_prefill_size: int | None = Field(
        default=None, gt=0, description="override the profile's chunk budget"
    )
    num_routers: int = Field(default=1, ge=1, le=64, description="router replicas (sim.replicas)")
    lb_balance: Balance = Field(
        default="roundrobin",
        description="how the load balancer splits requests among the routers: roundrobin, leastconn "
        "(HAProxy's) or session (hash of the session id: sticky conversations)",
    )
    peer_sync_ms: float | None = Field(
        default=None, ge=0, description="routers apply their peers' in-flight changes this late; None: none"
    )


def load_sim_config(path: str | None) -> SimConfig:
    return SimConfig() if path is None else load_yaml(SimConfig, path)
