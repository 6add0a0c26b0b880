"""Which decode workers may run a prefill locally, and the PD route with its availability fallbacks.

A decode worker is *local-capable* when it is healthy, its telemetry is fresh and it advertises
``supports_local_prefill``. LOCAL and DEFLECT routes only ever go to local-capable workers: a worker
we cannot see could be saturated, so stale telemetry always means the PD path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sglang_ppd.core.types import (
    ChunkPlan,
    ClusterSnapshot,
    RequestFeatures,
    Role,
    Route,
    RouteKind,
    Slo,
    WorkerSnapshot,
)
from sglang_ppd_policies import reasons
from sglang_ppd_policies.balance import decode_keys, least_loaded
from sglang_ppd_policies.errors import NoRouteError
from sglang_ppd_policies.estimate import Estimator


class PairChooser(Protocol):
    def pair(
        self, req: RequestFeatures, ps: Sequence[WorkerSnapshot], ds: Sequence[WorkerSnapshot], slo: Slo
    ) -> tuple[WorkerSnapshot, WorkerSnapshot, str]: ...


def local_capable(d: WorkerSnapshot, slo: Slo) -> bool:
    return d.supports_local_prefill and d.is_fresh(slo.max_telemetry_age_ms)


def resident_candidates(
    req: RequestFeatures, ds: Sequence[WorkerSnapshot], slo: Slo, allow_approx: bool
) -> tuple[list[tuple[WorkerSnapshot, int]], str]:
    """Local-capable decode workers holding a prefix of the prompt, with their hit lengths.

    Also returns why none qualified (the first blocker in snapshot order), for the PD route's reason.
    A worker needs free KV for the uncached tokens; an approximate hit counts only if allowed.
    """
    out: list[tuple[WorkerSnapshot, int]] = []
    blocked = reasons.NO_RESIDENT_PREFIX
    age = slo.max_telemetry_age_ms
    for d in ds:
        h = req.hit_len(d.worker_id)
        if h <= 0:
            continue
        if not d.is_fresh(age):
            why = reasons.STALE_TELEMETRY
        elif not d.supports_local_prefill:
            why = reasons.NO_LOCAL_SUPPORT
        elif not allow_approx and d.worker_id in req.approx_workers:
            why = reasons.APPROX_HIT
        elif (free := d.kv_free_tokens) is not None and free < req.prompt_len - h:
            why = reasons.KV_FULL
        else:
            out.append((d, h))
            continue
        if blocked == reasons.NO_RESIDENT_PREFIX:
            blocked = why
    return out, blocked


def local_route(kind: RouteKind, d: WorkerSnapshot, new_len: int, chunk_len: int, reason: str) -> Route:
    chunk_len = max(1, min(chunk_len, new_len))
    plan = ChunkPlan(chunk_len=chunk_len, num_chunks=-(-new_len // chunk_len))
    return Route(kind=kind, decode_worker=d.worker_id, chunk_plan=plan, reason=reason)


def no_prefill_route(req: RequestFeatures, ds: Sequence[WorkerSnapshot], slo: Slo, est: Estimator) -> Route:
    """No healthy P: run the prefill on the local-capable D with the longest exact hit (then the
    least loaded), in chunks that keep its resident decodes within one TPOT target if possible."""
    cands = [d for d in ds if local_capable(d, slo)]
    if not cands:
        raise NoRouteError(
            "no healthy prefill worker, and no decode worker with fresh telemetry supports local prefill"
        )
    keys = decode_keys(cands, slo.max_telemetry_age_ms)
    hits = [0 if d.worker_id in req.approx_workers else req.hit_len(d.worker_id) for d in cands]
    best = least_loaded([(-hits[i], *keys[i]) for i in range(len(cands))])
    d, h = cands[best], hits[best]
    extra = est.decode_step_ms(d, True, req.prompt_len) - est.dec_base_ms
    chunk = est.max_chunk_len(req.prompt_len, extra, slo.tpot_ms) or est.chunk_len
    kind = RouteKind.LOCAL if h > 0 else RouteKind.DEFLECT
    return local_route(kind, d, req.prompt_len - h, chunk, reasons.NO_PREFILL)


def pd_route(
    chooser: PairChooser,
    req: RequestFeatures,
    ps: Sequence[WorkerSnapshot],
    ds: Sequence[WorkerSnapshot],
    slo: Slo,
    est: Estimator,
    reason: str | None = None,
) -> Route:
    """The PD pair from ``chooser`` (reason: ``reason`` or the chooser's); the no-P fallback."""
    if not ps:
        return no_prefill_route(req, ds, slo, est)
    p, d, why = chooser.pair(req, ps, ds, slo)
    return Route(
        kind=RouteKind.PD, decode_worker=d.worker_id, prefill_worker=p.worker_id, reason=reason or why
    )


def healthy_workers(snap: ClusterSnapshot) -> tuple[list[WorkerSnapshot], list[WorkerSnapshot]]:
    """(healthy P, healthy D) in snapshot order, in one pass; raises if no D is healthy."""
    ps: list[WorkerSnapshot] = []
    ds: list[WorkerSnapshot] = []
    for w in snap.workers:
        if w.healthy:
            (ds if w.role is Role.DECODE else ps).append(w)
    if not ds:
        raise NoRouteError("no healthy decode worker")
    return ps, ds


def best_resident(cands: Sequence[tuple[WorkerSnapshot, int]], slo: Slo) -> tuple[WorkerSnapshot, int]:
    """The candidate with the longest hit; ties to the least loaded, then snapshot order."""
    keys = decode_keys([d for d, _ in cands], slo.max_telemetry_age_ms)
    best = least_loaded([(-h, *keys[i]) for i, (_, h) in enumerate(cands)])
    return cands[best]
