"""``shortest_queue``: PD to the prefill worker with the fewest queued prefill tokens and the decode
worker with the fewest requests in flight. An example plugin: it shows the contract, not a policy
to beat the built-ins with.

The contract (``sglang_ppd.core.policy``): a pure function of the request's features, a snapshot of
the cluster and the SLO, returning a route and a short reason. No I/O, no clock, no environment.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import NoRouteError, Policy, PolicyParams
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo, WorkerSnapshot


class ShortestQueueParams(PolicyParams):
    tokens_per_request: int = Field(
        2048, gt=0, description="queued prefill tokens an in-flight request counts as when telemetry is stale"
    )


class ShortestQueuePolicy(Policy):
    Params: ClassVar[type[PolicyParams]] = ShortestQueueParams
    needs_decode_cache: ClassVar[bool] = False
    """It never routes local, so decode workers need not keep finished requests' KV."""

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, ShortestQueueParams)
        self.tokens_per_request = params.tokens_per_request

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        if not snap.decode:
            raise NoRouteError("no healthy decode worker")
        if not snap.prefill:
            raise NoRouteError("no healthy prefill worker")
        # Ties go to the lower worker id, so the choice is deterministic.
        p = min(snap.prefill, key=lambda w: (self.queued_tokens(w, slo), w.worker_id))
        d = min(snap.decode, key=lambda w: (w.num_inflight, w.worker_id))
        stale = not p.is_fresh(slo.max_telemetry_age_ms)
        return Route(
            RouteKind.PD, decode_worker=d.worker_id, prefill_worker=p.worker_id,
            reason="shortest_queue_stale" if stale else "shortest_queue",
        )  # fmt: skip

    def queued_tokens(self, w: WorkerSnapshot, slo: Slo) -> int:
        # Stale or missing telemetry is normal: fall back to the router's own exact in-flight count,
        # the same way for every candidate.
        if w.is_fresh(slo.max_telemetry_age_ms) and w.queued_prefill_tokens is not None:
            return w.queued_prefill_tokens
        return w.num_inflight * self.tokens_per_request
