"""Builders for hand-built snapshots shared by the policy tests (no tests here)."""

from __future__ import annotations

from typing import Any

from sglang_ppd.core.costmodel import DEFAULT_PROFILE, CostProfile, load_profile
from sglang_ppd.core.policy import Policy, load_policy
from sglang_ppd.core.types import ClusterSnapshot, LinkSnapshot, RequestFeatures, Role, Slo, WorkerSnapshot

PROFILE: CostProfile = load_profile(DEFAULT_PROFILE)
SLO = Slo(ttft_ms=2000.0, tpot_ms=100.0, max_telemetry_age_ms=1000.0)


def pw(
    wid: str, queued: int = 0, inflight: int = 0, age_ms: float | None = 10.0, **kw: Any
) -> WorkerSnapshot:
    """A prefill worker with ``queued`` prefill tokens."""
    return WorkerSnapshot(
        worker_id=wid,
        role=Role.PREFILL,
        age_ms=age_ms,
        num_inflight=inflight,
        num_running=kw.pop("num_running", 1 if queued else 0),
        num_waiting=kw.pop("num_waiting", 0),
        queued_prefill_tokens=queued,
        **kw,
    )


def dw(
    wid: str,
    running: int = 4,
    ctx_per_req: int = 2000,
    inflight: int | None = None,
    age_ms: float | None = 10.0,
    local: bool = True,
    **kw: Any,
) -> WorkerSnapshot:
    """A decode worker with ``running`` decodes of ``ctx_per_req`` context each, local-capable."""
    return WorkerSnapshot(
        worker_id=wid,
        role=Role.DECODE,
        age_ms=age_ms,
        num_inflight=running if inflight is None else inflight,
        num_running=running,
        num_waiting=kw.pop("num_waiting", 0),
        queued_prefill_tokens=kw.pop("queued_prefill_tokens", 0),
        kv_used_tokens=kw.pop("kv_used_tokens", running * ctx_per_req),
        kv_capacity_tokens=kw.pop("kv_capacity_tokens", PROFILE.kv_capacity_tokens),
        running_context_tokens=running * ctx_per_req,
        num_local_prefills=kw.pop("num_local_prefills", 0),
        supports_local_prefill=local,
        **kw,
    )


def snap(*workers: WorkerSnapshot, queued_bytes: int = 0, bw: float = 50e9) -> ClusterSnapshot:
    return ClusterSnapshot(workers=tuple(workers), link=LinkSnapshot(bw, queued_bytes, 5.0))


def req(
    prompt_len: int, max_new: int = 256, approx: frozenset[str] = frozenset(), **hits: int
) -> RequestFeatures:
    return RequestFeatures(
        request_id="r", prompt_len=prompt_len, max_new_tokens=max_new, cached_len=hits, approx_workers=approx
    )


def policy(name: str, **params: Any) -> Policy:
    return load_policy(name, params, PROFILE)
