"""``ppd``: the PPD paper's dynamic choice between a local append-prefill and the PD path (Turn 2+).

Source: "PPD" (arXiv 2603.13358): a Turn 2+ request whose history KV sits on the decode worker that
served the previous turn may run its short append-prefill there instead of P->D. The choice weighs
TTFT against the TPOT the residents of that D worker lose, with the SLO weights ``w_ttft``/``w_tpot``.

For each route, from the live snapshot and the step model (:mod:`.estimate`):

- PD (the :mod:`.cost_pair` pair): TTFT = P queue (queued prefill tokens at full chunks) + P compute
  of the tokens P lacks + transfer of the tokens D lacks over the link, behind ``link.queued_bytes``
  + one decode iteration on D. No TPOT impact on D.
- LOCAL on each local-capable D with a resident prefix: TTFT = its current decode iteration + its
  queued local prefills + the append in chunks mixed into its decode steps. A busy D sizes each
  chunk to its TBT budget (the TPOT SLO, or the worker's own ``tbt_budget_ms`` where tighter), but
  runs at least ``min_chunk_len`` tokens (``core.chunk.run_len``). A D where even that chunk breaks
  the budget is not a candidate (``core.guard``'s rule, applied here so that the PD route is this
  policy's own choice; reason ``tbt_budget``); so is an idle D for an append longer than one
  chunk, which residents arriving meanwhile would share. Each mixed iteration stalls the B resident
  decodes by (mixed - decode-only) ms; spread over their output, each one's TPOT grows by stall/L,
  so ΔTPOT = B*stall/L summed over the residents, with L the residents' mean output length where
  the host knows it (``resident_output_len``: the router's and simulator's own in-flight
  requests), else this request's ``max_new_tokens`` clipped at 4096 as SGLang's own estimate is;
  ``tpot_horizon_len`` overrides both.

Score = w_ttft*TTFT/slo.ttft_ms + w_tpot*ΔTPOT/slo.tpot_ms (both SLO-normalized). The lowest score
wins; ties go to PD.

A local append moves the prefill, it does not always save it: P's radix cache holds only what P
prefilled, so once a turn runs on D, the session's next PD turn recomputes it on P. A session goes
PD for good once its history outgrows what a chunk can attend within the TBT budget. So when the
session is headed there, the local score is charged with the P compute the PD route would do now
(``count_deferred_prefill``), and local wins only on what it really saves (P's queue, the KV
transfer, the admit step) against the stall it costs. "Headed there": at twice its current prompt,
the append's chunk would not fit D's TBT budget (``core.guard.tbt_chunk`` with today's residents).
Twice, because with no other knowledge of a session's length, a session that has run for some
turns is as likely as not to run as many again (the Copernican estimate), and its history grows
with its turns. Short chat histories and idle decode workers are never charged, so an immediate
Turn 2 still goes local. Without the charge, on the agentic workload below ``pd``'s knee
(``agentic:n=200`` x0.04, seeds 1-2, 2 s / 100 ms) Turn 2+ mean TTFT was 443 and 389 ms against
415 and 399 for ``pd_cache_aware``: sessions appended locally until their history hit the TBT
budget, then paid P's whole lag at once (825 ms on those turns). With it, 406 and 393 ms; ShareGPT
sessions (875 at 2/s) keep the local appends' gain (74 and 75 ms against 84 and 87 for
``pd_cache_aware``; charging every append instead gives 82 and 84).

No resident prefix (Turn 1, or evicted) -> the PD route.

The PD route's pair is :mod:`.cost_pair`'s (``prefill_choice``).

Parameters:
  count_deferred_prefill: charge a local append with P's prefill of the prompt when the session is
    headed past the TBT budget (True).
  prefill_choice: ``cost`` (default) or ``cache_aware`` P choice for the PD route (:mod:`.cost_pair`).
  tpot_horizon_len: L above (None: the residents' mean output length, else the request's
    max_new_tokens, at most 4096).
  local_chunk_len: largest chunk of a local append, and the route's chunk cap (None: the profile's
    chunked_prefill_size, as SGLang).
  min_chunk_len: smallest chunk a busy D runs per iteration (64: the worker extension's and the
    simulator's default, so a local prefill always progresses).
  allow_approx_local, cache_threshold, balance_*: as ``always_local`` / ``pd_cache_aware``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.guard import tbt_chunk
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.stepmodel import StepModel, tbt_budget_ms
from sglang_ppd.core.types import (
    CLIP_MAX_NEW_TOKENS,
    ClusterSnapshot,
    RequestFeatures,
    Route,
    RouteKind,
    Slo,
    WorkerSnapshot,
)
from sglang_ppd_policies import reasons
from sglang_ppd_policies.always_local import LocalParams
from sglang_ppd_policies.base import BuiltinPolicy
from sglang_ppd_policies.candidates import (
    local_route,
    no_prefill_route,
    pd_route,
    resident_candidates,
)
from sglang_ppd_policies.cost_pair import PrefillChoiceParams, pd_pair
from sglang_ppd_policies.view import View


class PpdParams(LocalParams, PrefillChoiceParams):
    tpot_horizon_len: int | None = Field(
        None, ge=1, description="output tokens a resident's stall is spread over (None: max_new_tokens)"
    )
    local_chunk_len: int | None = Field(
        None, ge=1, description="largest local-append chunk (None: the profile's chunked_prefill_size)"
    )
    min_chunk_len: int = Field(64, ge=1, description="smallest chunk a busy decode worker runs per step")
    count_deferred_prefill: bool = Field(
        True, description="charge a local append with the prefill it defers to the session's next PD turn"
    )


class PpdPolicy(BuiltinPolicy):
    Params = PpdParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, PpdParams)
        self._chooser = pd_pair(params, self.est)
        self._allow_approx = params.allow_approx_local
        self._horizon_len = params.tpot_horizon_len
        self._chunk_len = params.local_chunk_len or self.est.chunk_len
        self._min_chunk_len = min(params.min_chunk_len, self._chunk_len)
        self._count_deferred = params.count_deferred_prefill

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        v = View(req, snap, slo)
        cands, why = resident_candidates(v, self._allow_approx)
        if not cands:
            return pd_route(self._chooser, self.pd_routes, v, self.est, why)
        return self.decide_resident(v, cands)

    def decide_resident(self, v: View, cands: Sequence[tuple[WorkerSnapshot, int]]) -> Route:
        """Local append on one of ``cands`` (local-capable, resident prefix) or the PD pair."""
        if not v.ps:
            return no_prefill_route(v, self.est)
        est = self.est
        req, slo = v.req, v.slo
        prompt_len = req.prompt_len
        p, d_pd, _ = self._chooser.pair(v)
        ttft_w = slo.w_ttft / slo.ttft_ms
        best_score = ttft_w * est.pd_ttft_ms(v, p, d_pd)
        # A local append moves this prefill to D; it does not save it: P never sees the turn, so
        # the session's next PD turn recomputes it there (see count_deferred_prefill).
        deferred = ttft_w * est.p_prefill_ms(v, p) if self._count_deferred else 0.0
        best: tuple[WorkerSnapshot, int] | None = None
        why = reasons.PD_CHEAPER
        for d, h in cands:
            new_len = prompt_len - h
            residents = StepModel.residents(d, True)
            budget = tbt_budget_ms(d, slo)
            chunk = tbt_chunk(
                est.step, d, True, prompt_len, new_len, budget, self._chunk_len, self._min_chunk_len
            )
            if not chunk:
                why = reasons.TBT_BUDGET
                continue
            step = est.decode_step_ms(d, True, prompt_len)
            extra = step - est.dec_base_ms if residents else 0.0
            run = est.chunked_ms(new_len, h, chunk, extra, d.prefill_cost_factor)
            ttft = (step if residents else 0.0) + est.local_backlog_ms(d, chunk, extra, new_len) + run
            stall = run - -(-new_len // chunk) * step
            score = ttft_w * ttft + self._tpot_weight(v, d) * residents * stall
            if deferred and not tbt_chunk(
                est.step, d, True, 2 * prompt_len, new_len, budget, self._chunk_len, self._min_chunk_len
            ):
                score += deferred
            if score < best_score:
                best_score, best = score, (d, h)
        if best is None:
            return self.pd_routes.get(p, d_pd, why)
        d, h = best
        return local_route(RouteKind.LOCAL, d, prompt_len - h, self._chunk_len, reasons.APPEND_CHEAPER)

    def _tpot_weight(self, v: View, d: WorkerSnapshot) -> float:
        """Score weight per ms of stall per resident decode on ``d``: its TPOT grows by stall/L
        over an output of L tokens, L the residents' own mean output length where the host knows
        it (``resident_output_len``), else this request's."""
        slo = v.slo
        own = min(max(v.req.max_new_tokens, 1), CLIP_MAX_NEW_TOKENS)
        horizon_len = self._horizon_len or d.resident_output_len or own
        return slo.w_tpot / slo.tpot_ms / horizon_len

    def prefers_local(
        self, v: View, d: WorkerSnapshot, ttft_local_ms: float, stall_ms: float, ttft_pd_ms: float
    ) -> bool:
        """This policy's score applied to any prefill on ``d`` (a :data:`DeflectGate`): whether its
        TTFT and the stall it puts on ``d``'s residents cost less than the PD path's TTFT."""
        ttft_w = v.slo.w_ttft / v.slo.ttft_ms
        residents = StepModel.residents(d, True)
        return ttft_w * ttft_local_ms + self._tpot_weight(v, d) * residents * stall_ms < ttft_w * ttft_pd_ms
