"""The PD pair of the cost-based policies: the prefill worker that finishes this prompt first.

``pd_cache_aware`` (sglang_router's rule) takes the P worker with the longest radix hit unless the
router's in-flight counts differ by more than 32 requests. On long-context agentic traffic that
rule sends every turn of every session to the one P that holds their histories while the other
idles: in the simulator (``agentic:n=200`` at 1.5x ``pd``'s knee, seed 1) ``p0`` reached 100k
queued tokens and 30 requests with ``p1`` empty, the queue made the decode workers' preallocated
KV wait on it, and the run collapsed (TTFT P95 160 s). In-flight counts cannot see that: 30
requests of 40k tokens are minutes of work, 30 chat turns are not.

:class:`CostAwarePair` weighs the same two things in one unit instead: for each healthy P, its queue
wait plus the prefill of the tokens it lacks (:meth:`Estimator.p_queue_ms`,
:meth:`Estimator.chunked_ms`, at the worker's measured ``prefill_cost_factor``), and takes the
smallest (first in snapshot order on ties). A P holding the history still wins while its queue is
shorter than the recomputation the other would do; past that, the idle P takes the work. This is
the shape of Dynamo's KV-aware router cost (prefill blocks not cached plus load) in the step
model's milliseconds. Stale telemetry falls back as every estimate does (in-flight x prompt). The
D side stays the cache-aware choice among the D workers with KV room.

Parameter (of ``ppd``, ``deflect`` and ``ppd_deflect``):
  prefill_choice: ``cost`` (this rule, the default) or ``cache_aware`` (sglang_router's rule, as
    ``pd_cache_aware``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sglang_ppd.core.types import WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.balance import CacheAwarePair, decode_keys, with_room
from sglang_ppd_policies.candidates import PairChooser
from sglang_ppd_policies.estimate import Estimator
from sglang_ppd_policies.pd_cache_aware import PdCacheAwareParams, cache_aware_pair
from sglang_ppd_policies.view import View


class PrefillChoiceParams(PdCacheAwareParams):
    prefill_choice: Literal["cost", "cache_aware"] = Field(
        "cost", description="PD path's P: 'cost' (queue + uncached prefill) or 'cache_aware' (sglang_router)"
    )


class CostAwarePair:
    """P by estimated prefill finish; D as :class:`CacheAwarePair` among those with KV room."""

    __slots__ = ("_est", "_d_chooser")

    def __init__(self, est: Estimator, d_chooser: CacheAwarePair) -> None:
        self._est = est
        self._d_chooser = d_chooser

    def pair(self, v: View) -> tuple[WorkerSnapshot, WorkerSnapshot, str]:
        est = self._est
        prompt_len = v.req.prompt_len
        hits, fresh = v.hits, v.fresh
        best = v.ps[0]
        best_ms = float("inf")
        for p in v.ps:
            hit = hits.get(p.worker_id, 0)
            ms = est.p_queue_ms(p, p.worker_id in fresh, prompt_len) + est.chunked_ms(
                prompt_len - hit, hit, est.chunk_len, 0.0, p.prefill_cost_factor
            )
            if ms < best_ms:
                best, best_ms = p, ms
        d, _ = self._d_chooser.pick(v, with_room(v), decode_keys)
        return best, d, reasons.PREFILL_COST


def pd_pair(params: PrefillChoiceParams, est: Estimator) -> PairChooser:
    """The PD pair chooser ``params.prefill_choice`` names."""
    chooser = cache_aware_pair(params)
    return chooser if params.prefill_choice == "cache_aware" else CostAwarePair(est, chooser)
