"""``ppd_deflect``: the unified default, PPD's local append for Turn 2+ and Kairos deflection otherwise.

Sources: PPD (arXiv 2603.13358) and Kairos (arXiv 2607.02043), composed without copying either:

- a request with a resident prefix on a local-capable D worker (fresh telemetry, exact hit unless
  ``allow_approx_local``) gets :meth:`PpdPolicy.decide_resident`: local append vs PD by SLO-weighted
  TTFT and resident-TPOT cost;
- every other request gets :meth:`DeflectPolicy.decide_full`: deflected prefill vs PD by TTFT with
  the margin alpha, chunked within beta*TBT (``max_inflight`` per D worker if set); and, as the
  unified policy, only if ppd's score agrees (:meth:`PpdPolicy.prefers_local` as the gate): the
  deflection's TTFT plus the stall it puts on the D worker's residents must cost less than the PD
  path's TTFT. Kairos bounds the stall per step (beta*TBT) but not its total over a busy batch;
  without the gate, deflections on a decode-bound cluster slow every resident and the D workers'
  KV turnover with them (in the simulator, Azure conv at 16x: TTFT P50 twice ``pd``'s).

Both PD estimates include KV-link congestion: the transfer waits behind ``link.queued_bytes``, so a
congested link makes local appends and deflections relatively cheaper.

TPOT is a constraint, not only a weight: neither part sends a prefill to a decode worker whose
predicted step, with the chunk the worker will really run (at least ``min_chunk_len``), would
exceed its TBT budget (the TPOT SLO, or the worker's ``--ppd-tbt-slo-ms`` where tighter), nor a
multi-chunk prefill to an idle one that arriving residents would share (``core.guard``'s rule,
applied inside so that the fallback is this policy's own PD pair). Without it, on the Mooncake
conversation trace (histories of 10k-50k tokens, where a 64-token chunk alone costs more than
25 ms) its TPOT P95 was 62 ms against a 25 ms SLO; with it, 11.5 ms (``pd``: 11.7 ms).

Parameters: the union of ``ppd``'s (tpot_horizon_len, local_chunk_len, count_deferred_prefill)
and ``deflect``'s (alpha, beta, max_inflight), plus allow_approx_local, prefill_choice and the
``pd_cache_aware`` ones; same defaults.
"""

from __future__ import annotations

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, Slo
from sglang_ppd_policies.base import BuiltinPolicy
from sglang_ppd_policies.candidates import resident_candidates
from sglang_ppd_policies.deflect import DeflectParams, DeflectPolicy
from sglang_ppd_policies.ppd import PpdParams, PpdPolicy
from sglang_ppd_policies.view import View


class PpdDeflectParams(PpdParams, DeflectParams):
    """``ppd``'s and ``deflect``'s parameters together."""


class PpdDeflectPolicy(BuiltinPolicy):
    Params = PpdDeflectParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, PpdDeflectParams)
        # The params object is both a PpdParams and a DeflectParams: each part reads its own fields.
        self._ppd = PpdPolicy(params, profile)
        self._deflect = DeflectPolicy(params, profile)
        self._allow_approx = params.allow_approx_local

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        v = View(req, snap, slo)
        cands, why = resident_candidates(v, self._allow_approx)
        if cands:
            return self._ppd.decide_resident(v, cands)
        return self._deflect.decide_full(v, why, self._ppd.prefers_local)
