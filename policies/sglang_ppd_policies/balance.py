"""Load-balanced and cache-aware choice of a prefill and a decode worker for the PD path.

Load keys are ``(telemetry load, router in-flight count)``, compared lexicographically, ties to the
first worker in snapshot order. The telemetry load is queued prefill tokens on P and running plus
waiting requests on D. If any candidate's telemetry is stale or lacks the field, every candidate is
keyed on ``num_inflight`` alone (the router's exact count): one fallback for all, so a worker with
fresh numbers is never compared against one without.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from sglang_ppd.core.types import WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.view import View

LoadKey = tuple[int, ...]
KeysFn = Callable[[Sequence[WorkerSnapshot], Collection[str]], list[LoadKey]]


def prefill_keys(ps: Sequence[WorkerSnapshot], fresh: Collection[str]) -> list[LoadKey]:
    keys: list[LoadKey] = []
    for p in ps:
        q = p.queued_prefill_tokens
        if q is None or p.worker_id not in fresh:
            return [(p.num_inflight, 0) for p in ps]
        keys.append((q, p.num_inflight))
    return keys


def decode_keys(ds: Sequence[WorkerSnapshot], fresh: Collection[str]) -> list[LoadKey]:
    keys: list[LoadKey] = []
    for d in ds:
        r, w = d.num_running, d.num_waiting
        if r is None or w is None or d.worker_id not in fresh:
            return [(d.num_inflight, 0) for d in ds]
        keys.append((r + w, d.num_inflight))
    return keys


def least_loaded(keys: Sequence[LoadKey]) -> int:
    """Index of the smallest key; the first one on ties (``min`` keeps the first minimum)."""
    return min(range(len(keys)), key=keys.__getitem__)


def imbalanced(loads: Sequence[int], abs_threshold: int, rel_threshold: float) -> bool:
    """sglang_router's rule: imbalanced iff max-min > abs AND max > min*rel."""
    hi, lo = max(loads), min(loads)
    return hi - lo > abs_threshold and hi > lo * rel_threshold


class LeastLoadedPair:
    """SGLang router PD mode with load-based selection: least-loaded P and least-loaded D."""

    __slots__ = ()

    def pair(self, v: View) -> tuple[WorkerSnapshot, WorkerSnapshot, str]:
        p = v.ps[least_loaded(prefill_keys(v.ps, v.fresh))]
        d = v.ds[least_loaded(decode_keys(v.ds, v.fresh))]
        return p, d, reasons.LEAST_LOADED


class CacheAwarePair:
    """sglang_router's ``cache_aware`` policy applied to P and to D (decode radix cache on).

    Per role: if the router's in-flight counts are imbalanced (abs and rel thresholds), take the
    least-loaded worker; else the worker with the longest hit if hit/prompt > ``cache_threshold``
    (ties: lower load, then order); else the least-loaded worker. sglang_router falls back to the
    worker with the smallest radix tree below the threshold; we take the least-loaded one, which
    is what it converges to and needs no tree sizes. The route's reason is the P-side outcome.
    Hit lengths are used as given, approximate or not, as sglang_router's own tree is approximate.
    D candidates are those with room for the request's KV (:func:`with_room`).
    """

    __slots__ = ("cache_threshold", "abs_threshold", "rel_threshold")

    def __init__(self, cache_threshold: float, abs_threshold: int, rel_threshold: float) -> None:
        self.cache_threshold = cache_threshold
        self.abs_threshold = abs_threshold
        self.rel_threshold = rel_threshold

    def pick(self, v: View, ws: Sequence[WorkerSnapshot], keys: KeysFn) -> tuple[WorkerSnapshot, str]:
        if len(ws) > 1 and imbalanced([w.num_inflight for w in ws], self.abs_threshold, self.rel_threshold):
            return ws[least_loaded(keys(ws, v.fresh))], reasons.LOAD_IMBALANCE
        best: list[int] = []
        best_hit = 0
        hits = v.hits
        if hits:
            for i, w in enumerate(ws):
                h = hits.get(w.worker_id, 0)
                if h > best_hit:
                    best, best_hit = [i], h
                elif h == best_hit and h > 0:
                    best.append(i)
        if best and best_hit > self.cache_threshold * v.req.prompt_len:
            if len(best) == 1:
                return ws[best[0]], reasons.CACHE_HIT
            all_keys = keys(ws, v.fresh)
            return ws[best[least_loaded([all_keys[i] for i in best])]], reasons.CACHE_HIT
        return ws[least_loaded(keys(ws, v.fresh))], reasons.LOW_HIT

    def pair(self, v: View) -> tuple[WorkerSnapshot, WorkerSnapshot, str]:
        p, reason = self.pick(v, v.ps, prefill_keys)
        d, _ = self.pick(v, with_room(v), decode_keys)
        return p, d, reason


def with_room(v: View) -> Sequence[WorkerSnapshot]:
    """The D workers with KV room for the request (:meth:`View.has_room`); all if none has.

    A D worker admits a transfer only once it can reserve the request's KV (SGLang's prealloc
    queue); one without room makes the request wait for other requests to finish, however long
    its hit. sglang_router does not look at KV; this guard is ours.
    """
    roomy = [d for d in v.ds if v.has_room(d)]
    return roomy if roomy else v.ds
