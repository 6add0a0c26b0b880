"""The policy plugin contract and its one registration path: the ``sglang_ppd.policies`` entry points.

A policy is a pure, deterministic function of (request features, cluster snapshot, SLO) that returns
a :class:`Route` with a short reason. It does no I/O and reads no clock or environment; everything
it may depend on is in its arguments or was fixed at construction (its validated parameters and the
cost profile). The same object runs in the router, the emulated cluster and the simulator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar

from sglang_ppd.core.config import ConfigError, StrictModel, validate
from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, Slo

ENTRY_POINT_GROUP = "sglang_ppd.policies"


class NoRouteError(RuntimeError):
    """Raised by a policy when there is nowhere to send the request: no healthy decode worker, or no
    healthy prefill worker and no fresh local-capable decode worker. The router answers 503 and the
    simulator records a failed request."""


class PolicyParams(StrictModel):
    """Base for a policy's parameters. Subclasses add validated fields with documented defaults."""


class Policy(ABC):
    """Subclass, set ``Params``, implement :meth:`decide`, and register under the entry-point group."""

    Params: ClassVar[type[PolicyParams]] = PolicyParams
    needs_decode_cache: ClassVar[bool] = True
    """Whether D workers should retain finished requests' KV in their radix cache (SGLang's
    ``--disaggregation-decode-enable-radix-cache``). Classic PD runs without it; anything that routes
    local or skips re-sending resident KV needs it. The simulator and launcher configure D from this."""

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        self.params = params
        self.profile = profile

    @abstractmethod
    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        """Choose where this request's prefill runs."""


def available_policies() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def parse_param_overrides(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` from the command line -> dict; pydantic coerces the string values."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"policy parameter {pair!r} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out


def load_policy(name: str, params: Mapping[str, Any] | None, profile: CostProfile) -> Policy:
    """Instantiate the policy registered as ``name`` with validated ``params``."""
    eps = available_policies()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none installed: is sglang-ppd installed with pip?)"
        raise ConfigError(f"unknown policy {name!r}; available policies: {known}")
    try:
        cls = eps[name].load()
    except Exception as exc:  # the plugin's own import failed: one line naming it, not our traceback
        raise ConfigError(
            f"policy {name!r}: cannot load its entry point {eps[name].value!r}: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise ConfigError(f"entry point {name!r} -> {cls!r} is not a sglang_ppd Policy subclass")
    parsed = validate(cls.Params, dict(params or {}), f"parameters of policy {name!r}")
    return cls(parsed, profile)
