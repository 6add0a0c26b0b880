"""``always_local``: every request with a resident prefix on a decode worker appends there.

Source: the PPD paper's (arXiv 2603.13358) "always append on D" ablation, the upper bound on KV
reuse: every Turn 2+ request whose history sits on a local-capable D worker with fresh telemetry
runs its append-prefill on that worker (the longest exact hit; ties to the least loaded), whatever
the cost. Everything else takes the ``pd_cache_aware`` path.

Parameters:
  allow_approx_local: also trust estimated (approximate) hit lengths for the local choice (False:
    an estimated hit may be wrong, and a wrong local route recomputes the whole prompt on D).
  cache_threshold, balance_abs_threshold, balance_rel_threshold: the PD path, as ``pd_cache_aware``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo, WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.base import BuiltinPolicy
from sglang_ppd_policies.candidates import (
    best_resident,
    local_route,
    pd_route,
    resident_candidates,
)
from sglang_ppd_policies.pd_cache_aware import PdCacheAwareParams, cache_aware_pair
from sglang_ppd_policies.view import View


class LocalParams(PdCacheAwareParams):
    """Shared by every policy that may route LOCAL."""

    allow_approx_local: bool = Field(
        False, description="route local on an estimated (approximate) hit length, not only an exact one"
    )


class AlwaysLocalPolicy(BuiltinPolicy):
    Params: ClassVar[type[LocalParams]] = LocalParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, LocalParams)
        self._chooser = cache_aware_pair(params)
        self._allow_approx = params.allow_approx_local

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        v = View(req, snap, slo)
        cands, why = resident_candidates(v, self._allow_approx)
        if not cands:
            return self.pd(v, why)
        d, h = best_resident(v, cands)
        return self.decide_resident(v, d, h)

    def decide_resident(self, v: View, d: WorkerSnapshot, hit_len: int) -> Route:
        """The route once ``d`` holds the longest resident prefix (``hit_len`` tokens); subclasses
        (``threshold``) may send it PD instead."""
        new_len = v.req.prompt_len - hit_len
        return local_route(RouteKind.LOCAL, d, new_len, self.est.chunk_len, reasons.RESIDENT_PREFIX)

    def pd(self, v: View, reason: str | None) -> Route:
        return pd_route(self._chooser, self.pd_routes, v, self.est, reason)
