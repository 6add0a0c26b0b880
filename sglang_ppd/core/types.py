"""The routing contract: what a policy sees and what it returns.

Every object here is frozen and slotted. The same objects are built by the live router (from HTTP
bodies, radix-tree hit lengths and ZMQ telemetry), by the emulated cluster and by the simulator, so
a policy cannot tell which of the three it runs in. "Absent" is always ``None``, never ``-1``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

CLIP_MAX_NEW_TOKENS = 4096
"""SGLang's ``SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION`` default: its schedulers (decode prealloc
included) reserve at most this many output tokens per request, whatever ``max_new_tokens`` says."""


class Role(str, enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


class RouteKind(str, enum.Enum):
    PD = "pd"
    """Prefill on a P worker, KV shipped to a D worker (SGLang's standard disaggregated path)."""
    LOCAL = "local"
    """Append-prefill on the D worker that already holds the conversation's KV (PPD)."""
    DEFLECT = "deflect"
    """A full (or mostly uncached) prefill deflected to a D worker, mixed into its decode steps."""


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What the router knows about one request before routing it.

    ``cached_len`` maps worker id -> number of leading prompt tokens resident in that worker's radix
    cache (a radix-tree hit length). A worker missing from the map has no known hit (0).
    ``approx_workers`` lists workers whose hit length is an estimate (no KV events from them), so a
    policy can discount it.
    """

    request_id: str
    prompt_len: int
    max_new_tokens: int
    cached_len: Mapping[str, int] = field(default_factory=dict)
    approx_workers: frozenset[str] = frozenset()
    session_id: str | None = None
    turn: int | None = None
    session_workers: frozenset[str] = frozenset()
    """Workers whose KV events attributed stored blocks to ``session_id`` (SGLang 0.5.20+'s
    ``BlockStored.session_id``; attribution only, not residency: ``cached_len`` is that)."""

    def hit_len(self, worker_id: str) -> int:
        # A full hit still needs one token computed to produce logits, as in SGLang.
        return min(self.cached_len.get(worker_id, 0), max(self.prompt_len - 1, 0))

    def uncached_len(self, worker_id: str) -> int:
        return self.prompt_len - self.hit_len(worker_id)


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker's last known load, as published by the worker (or polled), plus its age.

    ``age_ms`` is how old the telemetry is at decision time; ``None`` means nothing was ever received.
    ``num_inflight`` is the router's own count of requests it sent there and that have not
    finished: it is always exact, so it is the fallback when telemetry is stale.
    Iteration times are ``None`` until the worker has reported one.
    """

    worker_id: str
    role: Role
    age_ms: float | None
    num_inflight: int = 0
    num_running: int | None = None
    num_waiting: int | None = None
    queued_prefill_tokens: int | None = None
    kv_used_tokens: int | None = None
    kv_capacity_tokens: int | None = None
    decode_iter_ms: float | None = None
    mixed_iter_ms: float | None = None
    running_context_tokens: int | None = None
    num_local_prefills: int | None = None
    supports_local_prefill: bool = False
    healthy: bool = True
    num_local_inflight: int = 0
    """The router's own count of LOCAL/DEFLECT routes it sent there whose prefill has not finished
    (exact, like ``num_inflight``): telemetry's ``num_local_prefills`` lags a burst of routes."""
    tbt_budget_ms: float | None = None
    """The worker's own TBT budget (``--ppd-tbt-slo-ms``), when it publishes one."""
    resident_output_len: int | None = None
    """Mean output length (``max_new_tokens``, clipped) of the host's requests in flight there: the
    number of tokens a resident's stall is spread over in its TPOT."""
    prefill_cost_factor: float = 1.0
    """Measured prefill time over the cost profile's prediction on this worker (the host's bounded
    online residual, ``core.correction``; 1.0 when the host does not correct)."""

    def is_fresh(self, max_age_ms: float) -> bool:
        return self.healthy and self.age_ms is not None and self.age_ms <= max_age_ms

    @property
    def kv_free_tokens(self) -> int | None:
        if self.kv_used_tokens is None or self.kv_capacity_tokens is None:
            return None
        return self.kv_capacity_tokens - self.kv_used_tokens


@dataclass(frozen=True, slots=True)
class LinkSnapshot:
    """The P->D KV transfer link: bandwidth and bytes queued ahead of a new transfer."""

    bandwidth_bytes_per_s: float
    queued_bytes: int
    age_ms: float | None


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """All workers' telemetry at one decision instant. Order is stable: ties go to the first."""

    workers: tuple[WorkerSnapshot, ...]
    link: LinkSnapshot

    def by_role(self, role: Role) -> tuple[WorkerSnapshot, ...]:
        return tuple(w for w in self.workers if w.role is role and w.healthy)

    @property
    def prefill(self) -> tuple[WorkerSnapshot, ...]:
        return self.by_role(Role.PREFILL)

    @property
    def decode(self) -> tuple[WorkerSnapshot, ...]:
        return self.by_role(Role.DECODE)


@dataclass(frozen=True, slots=True)
class Slo:
    """Latency targets and how much the operator cares about each (PPD's w_ttft / w_tpot)."""

    ttft_ms: float = 2000.0
    tpot_ms: float = 100.0
    w_ttft: float = 1.0
    w_tpot: float = 1.0
    max_telemetry_age_ms: float = 1000.0
    """Telemetry older than this is stale: every policy treats such a worker the same way."""


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """How a D worker should run a local prefill: at most ``chunk_len`` new tokens per decode step."""

    chunk_len: int
    num_chunks: int


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    decode_worker: str
    prefill_worker: str | None = None
    chunk_plan: ChunkPlan | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.kind is RouteKind.PD) != (self.prefill_worker is not None):
            raise ValueError("a PD route names a prefill worker; local and deflect routes do not")
