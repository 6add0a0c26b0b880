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
model's milliseconds. Stale telemetry falls back as every estimate does (in-flight x prompt).

The D side is TPOT as a constraint, applied to the PD route too: among the D workers with KV room,
those whose decode step with this request in the batch (:meth:`StepModel.decode_step_with_ms`:
long contexts make the step, 6.9 ms + 0.059 ms per 1k context tokens on the default profile, so
about 300k running tokens reach 25 ms) stays within their TBT budget, and among them the
cache-aware choice (longest hit, or the least loaded when imbalanced). When none has such room,
the one with the shortest step. In the same agentic cell at the 5 s / 25 ms SLO (seeds 1-3) the
cache-aware D choice gave TPOT P95 27.7/26.1/26.9 ms and 0.82/0.92/0.89 of requests within SLO;
this one 25.7/24.5/25.5 ms and 0.92/0.96/0.94. Where steps stay far below the budget (every other
grid cell at 100 ms) it is the cache-aware choice.

Parameter (of ``ppd``, ``deflect`` and ``ppd_deflect``):
  prefill_choice: ``cost`` (this rule, the default) or ``cache_aware`` (sglang_router's rule, as
    ``pd_cache_aware``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sglang_ppd.core.stepmodel import tbt_budget_ms
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
    """P by estimated prefill finish; D cache-aware among those with KV and TBT room."""

    __slots__ = ("_est", "_d_chooser")

    def __init__(self, est: Estimator, d_chooser: CacheAwarePair) -> None:
        self._est = est
        self._d_chooser = d_chooser

    def pair(self, v: View) -> tuple[WorkerSnapshot, WorkerSnapshot, str]:
        est = self._est
        prompt_len, fresh = v.req.prompt_len, v.fresh
        best = v.ps[0]
        best_ms = float("inf")
        for p in v.ps:
            ms = est.p_queue_ms(p, p.worker_id in fresh, prompt_len) + est.p_prefill_ms(v, p)
            if ms < best_ms:
                best, best_ms = p, ms
        return best, self._decode(v), reasons.PREFILL_COST

    def _decode(self, v: View) -> WorkerSnapshot:
        """The cache-aware D among those with KV room whose decode step, with this request in its
        batch, stays within their TBT budget; if none, the one with the shortest such step."""
        step, slo, prompt_len, fresh = self._est.step, v.slo, v.req.prompt_len, v.fresh
        roomy = with_room(v)
        steps = [step.decode_step_with_ms(d, d.worker_id in fresh, prompt_len) for d in roomy]
        within = [d for d, ms in zip(roomy, steps, strict=True) if ms <= tbt_budget_ms(d, slo)]
        if not within:
            return roomy[min(range(len(roomy)), key=steps.__getitem__)]
        d, _ = self._d_chooser.pick(v, within, decode_keys)
        return d


def pd_pair(params: PrefillChoiceParams, est: Estimator) -> PairChooser:
    """The PD pair chooser ``params.prefill_choice`` names."""
    chooser = cache_aware_pair(params)
    return chooser if params.prefill_choice == "cache_aware" else CostAwarePair(est, chooser)
