"""What every built-in policy shares: the estimator built once from the cost profile, and interned
PD routes (an internal memo of immutable values: decisions stay pure and deterministic)."""

from __future__ import annotations

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import Policy, PolicyParams
from sglang_ppd_policies.candidates import PdRoutes
from sglang_ppd_policies.estimate import Estimator


class BuiltinPolicy(Policy):
    """Holds an :class:`Estimator` and :class:`PdRoutes`. Subclasses copy their validated params
    into plain attributes in ``__init__`` (pydantic attribute access is too slow for the hot path)."""

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        if not isinstance(params, self.Params):
            want, got = self.Params.__name__, type(params).__name__
            raise TypeError(f"{type(self).__name__} needs {want}, got {got}")
        super().__init__(params, profile)
        self.est = Estimator(profile)
        self.pd_routes = PdRoutes()
