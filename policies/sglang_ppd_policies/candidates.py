"""Which decode workers may run a prefill locally, and the PD route with its availability fallback.

A decode worker is *local-capable* when it is healthy, its telemetry is fresh and it advertises
``supports_local_prefill``. LOCAL and DEFLECT routes only ever go to local-capable workers: a worker
we cannot see could be saturated, so stale telemetry always means the PD path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.types import ChunkPlan, Route, RouteKind, WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.balance import decode_keys, least_loaded
from sglang_ppd_policies.estimate import Estimator
from sglang_ppd_policies.view import View


class PairChooser(Protocol):
    def pair(self, v: View) -> tuple[WorkerSnapshot, WorkerSnapshot, str]: ...


def resident_candidates(v: View, allow_approx: bool) -> tuple[list[tuple[WorkerSnapshot, int]], str]:
    """Local-capable decode workers holding a prefix of the prompt, with their hit lengths.

    Also returns why none qualified (the first blocker in snapshot order), for the PD route's reason.
    A worker needs KV room for the request and those already waiting there (:meth:`View.has_room`);
    an approximate hit counts only if allowed.
    """
    out: list[tuple[WorkerSnapshot, int]] = []
    blocked = reasons.NO_RESIDENT_PREFIX
    hits = v.hits
    if not hits:
        return out, blocked
    for d in v.ds:
        wid = d.worker_id
        h = hits.get(wid, 0)
        if h <= 0:
            continue
        if wid not in v.fresh:
            why = reasons.STALE_TELEMETRY
        elif not d.supports_local_prefill:
            why = reasons.NO_LOCAL_SUPPORT
        elif not allow_approx and wid in v.req.approx_workers:
            why = reasons.APPROX_HIT
        elif not v.has_room(d):
            why = reasons.KV_FULL
        else:
            out.append((d, h))
            continue
        if blocked == reasons.NO_RESIDENT_PREFIX:
            blocked = why
    return out, blocked


def best_resident(v: View, cands: Sequence[tuple[WorkerSnapshot, int]]) -> tuple[WorkerSnapshot, int]:
    """The candidate with the longest hit; ties to the least loaded, then snapshot order."""
    keys = decode_keys([d for d, _ in cands], v.fresh)
    best = least_loaded([(-h, *keys[i]) for i, (_, h) in enumerate(cands)])
    return cands[best]


def local_route(kind: RouteKind, d: WorkerSnapshot, new_len: int, chunk_len: int, reason: str) -> Route:
    chunk_len = max(1, min(chunk_len, new_len))
    plan = ChunkPlan(chunk_len=chunk_len, num_chunks=-(-new_len // chunk_len))
    return Route(kind=kind, decode_worker=d.worker_id, chunk_plan=plan, reason=reason)


def no_prefill_route(v: View, est: Estimator) -> Route:
    """No healthy P: run the prefill on the local-capable D with the longest exact hit (then the
    least loaded), in chunks that keep its resident decodes within one TPOT target if possible."""
    cands = [d for d in v.ds if d.supports_local_prefill and d.worker_id in v.fresh]
    if not cands:
        raise NoRouteError(
            "no healthy prefill worker, and no decode worker with fresh telemetry supports local prefill"
        )
    keys = decode_keys(cands, v.fresh)
    hits = [v.exact_hit(d.worker_id, False) for d in cands]
    best = least_loaded([(-hits[i], *keys[i]) for i in range(len(cands))])
    d, h = cands[best], hits[best]
    prompt_len = v.req.prompt_len
    extra = est.decode_step_ms(d, True, prompt_len) - est.dec_base_ms
    chunk = est.max_chunk_len(prompt_len, extra, v.slo.tpot_ms) or est.chunk_len
    kind = RouteKind.LOCAL if h > 0 else RouteKind.DEFLECT
    return local_route(kind, d, prompt_len - h, chunk, reasons.NO_PREFILL)


class PdRoutes:
    """Interned PD routes. A frozen ``Route`` costs ~2 us to build, a tenth of a decision, and PD
    routes repeat: (P, D, reason) triples are few. Bounded, so worker churn cannot grow it."""

    __slots__ = ("_routes",)
    MAX_ROUTES = 4096

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str, str], Route] = {}

    def get(self, p: WorkerSnapshot, d: WorkerSnapshot, reason: str) -> Route:
        key = (p.worker_id, d.worker_id, reason)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= self.MAX_ROUTES:
                self._routes.clear()
            route = Route(kind=RouteKind.PD, decode_worker=key[1], prefill_worker=key[0], reason=reason)
            self._routes[key] = route
        return route


def pd_route(
    chooser: PairChooser, routes: PdRoutes, v: View, est: Estimator, reason: str | None = None
) -> Route:
    """The PD pair from ``chooser`` (reason: ``reason`` or the chooser's); the no-P fallback."""
    if not v.ps:
        return no_prefill_route(v, est)
    p, d, why = chooser.pair(v)
    return routes.get(p, d, reason or why)
