"""The emulated worker's settings (built from ``sglang-ppd emulate`` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.types import Role

DEFAULT_LINK_BYTES_PER_S = 50e9
"""A 400 Gb/s RDMA NIC, as in the default profile's provenance."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    role: Role
    profile: CostProfile
    model_name: str
    ppd: bool = False
    """Decode only: honour ``do_local_prefill`` (the sglang_ppd worker extension's capability)."""
    conditional_agg: bool = False
    """Decode only, with ``ppd``: act as a stock SGLang decode server with upstream's conditional
    aggregation (draft PR #34773) instead of the extension: advertise
    ``disaggregation_decode_enable_conditional_agg``, no sglang_ppd ``/server_info`` fields (so no
    WorkerTelemetry; LoadStat only), and refuse sglang_ppd's request fields."""
    decode_radix_cache: bool = False
    """Decode only: keep finished requests' KV in the radix cache (SGLang's
    ``--disaggregation-decode-enable-radix-cache``); prefill workers always cache."""
    page_size: int = 1
    time_scale: float = 1.0
    """Wall seconds per modelled second: 1 is real time, 0 runs as fast as the host allows."""
    kv_capacity_tokens: int | None = None
    chunked_prefill_size: int | None = None
    tbt_budget_ms: float | None = None
    """Decode only: cap on a mixed (prefill chunk + decode) iteration while decodes are resident."""
    link_bandwidth_bytes_per_s: float = DEFAULT_LINK_BYTES_PER_S
    transfer_timeout_s: float = 60.0
    """How long either side of a PD room waits for the other before failing the request."""
