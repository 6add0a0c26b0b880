"""``deflect``: Kairos-style load-aware prefill deflection to decode workers.

Source: "Kairos" (arXiv 2607.02043): when prefill workers queue, a decode worker runs a queued full
prefill as chunks mixed into its decode steps, sized so resident decodes stay within a TBT budget.

Rule, from the live snapshot and the step model (:mod:`.estimate`):

- TTFT_P: the PD pair's P queue + P compute + KV transfer (behind the link's queued
  bytes) + one decode iteration.
- On each local-capable D worker (with fewer than ``max_inflight`` local prefills in flight, the
  larger of its telemetry's count and the router's own ``num_local_inflight``, if set) and free
  KV for this request and the ones already waiting there (:meth:`View.has_room`: a D with an
  admission backlog has no spare capacity to lend): the largest chunk χ whose mixed iteration with
  its resident decodes stays within ``beta*TBT`` (TBT: the TPOT SLO, or the worker's own
  ``tbt_budget_ms`` where tighter; attending over the whole prompt, the last chunk's worst case; an
  idle D gets full chunks). A D where the chunk the worker would really run (at least
  ``min_chunk_len``, ``core.chunk.run_len``) breaks the TBT budget is skipped (``core.guard``'s
  rule; reason ``tbt_budget``). TTFT_D = its current iteration + its local prefill backlog (its
  queued local prefill tokens, or the router's own in-flight local prefills there, each as long
  as this one, where more: telemetry lags a burst of routes) + ceil(uncached/χ) mixed iterations.
  Any exact hit on that D shortens it.
- Deflect to the D with the lowest TTFT_D iff the PD path is queued (the chosen P's queue wait plus
  the KV link's backlog exceeds ``min_p_queue_ms``), TTFT_D <= alpha*TTFT_P and
  TTFT_D <= slo.ttft_ms; else PD.
  The route carries ``ChunkPlan(χ, n)``.

The PD route's pair is :mod:`.cost_pair`'s (``prefill_choice``: ``cost`` by default, or
``cache_aware``).

Parameters (reasoned from the cost model's fit errors, not fitted to a trace):
  alpha: deflect only if TTFT_D <= alpha*TTFT_P (0.8). The profile's prefill fit has ~10% rms
    relative error, so two estimates can differ by ~20% by noise alone; a deflection also costs the
    residents TBT headroom, so it must win by more than that.
  beta: fraction of the TPOT target a mixed iteration may take (0.9): the decode fit's ~5% rms error
    at 2 sigma.
  min_p_queue_ms: deflect only while the PD path's queueing (P queue wait + KV link backlog)
    exceeds this (0: any queue). The papers' premise is load-aware: an idle P path serves a full
    prefill at no cost to anyone's TBT, while a deflection always costs the D's residents some, so
    an idle cluster keeps classic PD. A congested KV link counts: its wait is PD-only, like P's.
  max_inflight: an optional cap on local/deflected prefills in flight per D (None: off). It was 2,
    to keep a D from a backlog the estimate could not see; since TTFT_D counts the router's exact
    in-flight local prefills, the estimate sees it, and the cap only stopped deflections that
    paid: on the Azure trace at 1.5x ``pd``'s knee (dev split, 500 ms / 100 ms SLO) ``ppd_deflect``
    kept 0.798 of requests within SLO with the cap at 2, 0.839 at 4, 0.881 at 8 and 0.890 without
    (Dynamo's ``isl_or_load``, uncapped, 0.873); TPOT P95 stays within the SLO (52 ms), which beta
    guards.
  allow_approx_local, cache_threshold, balance_*: as ``always_local`` / ``pd_cache_aware``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.guard import tbt_chunk
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.stepmodel import tbt_budget_ms
from sglang_ppd.core.types import (
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
from sglang_ppd_policies.candidates import local_route, no_prefill_route
from sglang_ppd_policies.cost_pair import PrefillChoiceParams, pd_pair
from sglang_ppd_policies.view import View

DeflectGate = Callable[[View, WorkerSnapshot, float, float, float], bool]
"""(view, D, TTFT_D, stall per resident, TTFT_P) -> whether the deflection may go ahead."""


class DeflectParams(LocalParams, PrefillChoiceParams):
    alpha: float = Field(0.8, gt=0.0, description="deflect iff TTFT_D <= alpha * TTFT_P")
    beta: float = Field(0.9, gt=0.0, le=1.0, description="a mixed iteration may take beta * TPOT target")
    max_inflight: int | None = Field(
        None, ge=1, description="cap on local/deflected prefills in flight per decode worker (None: off)"
    )
    min_p_queue_ms: float = Field(0.0, ge=0.0, description="P queue + link backlog to exceed")


class DeflectPolicy(BuiltinPolicy):
    Params = DeflectParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, DeflectParams)
        self._chooser = pd_pair(params, self.est)
        self._allow_approx = params.allow_approx_local
        self._alpha = params.alpha
        self._beta = params.beta
        self._max_inflight = params.max_inflight
        self._min_p_queue_ms = params.min_p_queue_ms

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        return self.decide_full(View(req, snap, slo))

    def decide_full(self, v: View, pd_reason: str | None = None, gate: DeflectGate | None = None) -> Route:
        """Deflect to the fastest local-capable D if it beats the PD path by the margin alpha (and
        ``gate`` agrees, if given). A PD route's reason is ``pd_reason`` (else the chooser's) unless
        a D candidate was weighed."""
        if not v.ps:
            return no_prefill_route(v, self.est)
        est = self.est
        prompt_len = v.req.prompt_len
        p, d_pd, chooser_reason = self._chooser.pair(v)
        why = pd_reason = pd_reason or chooser_reason
        fresh = v.fresh
        best: WorkerSnapshot | None = None
        best_ttft, best_chunk, best_new, best_stall = math.inf, 0, 0, 0.0
        for d in v.ds:
            wid = d.worker_id
            if wid not in fresh:
                if why == pd_reason:
                    why = reasons.STALE_TELEMETRY
                continue
            if not d.supports_local_prefill:
                continue
            cap = self._max_inflight
            if cap is not None and max(d.num_local_prefills or 0, d.num_local_inflight) >= cap:
                why = reasons.DEFLECT_CAP
                continue
            if not v.has_room(d):
                continue
            new_len = prompt_len - v.exact_hit(wid, self._allow_approx)
            tbt_ms = tbt_budget_ms(d, v.slo)
            cached_len = prompt_len - new_len
            ttft, chunk, stall = est.deflected_ttft_ms(d, new_len, cached_len, self._beta * tbt_ms)
            if chunk <= 0 or not tbt_chunk(est.step, d, True, prompt_len, new_len, tbt_ms, chunk):
                if why == pd_reason:
                    why = reasons.TBT_BUDGET
                continue
            if ttft < best_ttft:
                best, best_ttft, best_chunk, best_new, best_stall = d, ttft, chunk, new_len, stall
        if best is not None:
            queued_ms = est.p_queue_ms(p, p.worker_id in fresh, prompt_len) + est.link_wait_ms(v.link)
            # An idle PD path needs no TTFT_P: the gate decides before the full estimate is built.
            ttft_p = est.pd_ttft_ms(v, p, d_pd) if queued_ms > self._min_p_queue_ms else math.inf
            if queued_ms <= self._min_p_queue_ms:
                why = reasons.P_IDLE
            elif best_ttft > self._alpha * ttft_p:
                why = reasons.P_FASTER
            elif best_ttft > v.slo.ttft_ms:
                why = reasons.TTFT_SLO
            elif gate is not None and not gate(v, best, best_ttft, best_stall, ttft_p):
                why = reasons.PD_CHEAPER
            else:
                return local_route(RouteKind.DEFLECT, best, best_new, best_chunk, reasons.P_QUEUE_DEFLECT)
        return self.pd_routes.get(p, d_pd, why)
