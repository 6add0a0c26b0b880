"""``pd_cache_aware``: the strong PD baseline, cache-aware on both sides of the split.

Source: sglang_router's ``cache_aware`` policy (approximate radix tree per worker; defaults
``cache_threshold=0.5``, ``balance_abs_threshold=32``, ``balance_rel_threshold=1.0001``) used for the
prefill choice, plus SGLang's decode radix cache (``--disaggregation-decode-enable-radix-cache``) so
the D worker holding the longest prefix is preferred and only its missing KV is transferred.

Choice per role (P, then D): if the router's in-flight counts are imbalanced (max-min > abs and
max > min*rel) take the least-loaded worker; else the longest hit if hit/prompt > cache_threshold;
else the least-loaded worker. Every prefill still runs on P (never LOCAL/DEFLECT, except when no P
is healthy).

Parameters (sglang_router's defaults, not fitted to any trace):
  cache_threshold: hit ratio above which the hit decides (0.5).
  balance_abs_threshold: in-flight spread, in requests, that counts as imbalance (32).
  balance_rel_threshold: max/min in-flight ratio that counts as imbalance (1.0001).
"""

from __future__ import annotations

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, Slo
from sglang_ppd_policies.balance import CacheAwarePair
from sglang_ppd_policies.base import BuiltinPolicy
from sglang_ppd_policies.candidates import pd_route
from sglang_ppd_policies.view import View


class PdCacheAwareParams(PolicyParams):
    cache_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="hit/prompt above which the longest hit wins (sglang_router)"
    )
    balance_abs_threshold: int = Field(
        32, ge=0, description="in-flight max-min (requests) beyond which load decides (sglang_router)"
    )
    balance_rel_threshold: float = Field(
        1.0001, ge=1.0, description="in-flight max/min beyond which load decides (sglang_router)"
    )


def cache_aware_pair(params: PdCacheAwareParams) -> CacheAwarePair:
    return CacheAwarePair(params.cache_threshold, params.balance_abs_threshold, params.balance_rel_threshold)


class PdCacheAwarePolicy(BuiltinPolicy):
    Params = PdCacheAwareParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, PdCacheAwareParams)
        self._chooser = cache_aware_pair(params)

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        return pd_route(self._chooser, self.pd_routes, View(req, snap, slo), self.est)
