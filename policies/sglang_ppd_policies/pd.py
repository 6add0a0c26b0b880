"""``pd``: classic prefill-decode disaggregation, as SGLang's router runs it in PD mode.

Source: SGLang PD disaggregation (sglang_router ``--pd-disaggregation`` with load-based selection);
DistServe/Splitwise-style split of prefill and decode. Every prefill runs on a P worker and its
full KV is shipped to a D worker: D workers run without a decode radix cache
(``needs_decode_cache = False``), so nothing is ever reused on D.

Choice: the P worker with the fewest queued prefill tokens and the D worker with the fewest running
plus waiting requests (ties: the router's in-flight count, then snapshot order). If any candidate's
telemetry is stale, all are compared on the router's in-flight count.

Parameters: none.
"""

from __future__ import annotations

from typing import ClassVar

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, Slo
from sglang_ppd_policies.balance import LeastLoadedPair
from sglang_ppd_policies.base import BuiltinPolicy
from sglang_ppd_policies.candidates import pd_route
from sglang_ppd_policies.view import View


class PdParams(PolicyParams):
    """``pd`` has no parameters."""


class PdPolicy(BuiltinPolicy):
    Params = PdParams
    needs_decode_cache: ClassVar[bool] = False

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        self._chooser = LeastLoadedPair()

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        return pd_route(self._chooser, self.pd_routes, View(req, snap, slo), self.est)
