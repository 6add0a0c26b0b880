"""The last step of every decision, in every host: what no policy may do, whatever it says.

``policy.decide`` proposes a route; :func:`guard` returns it unchanged, or the PD route that
replaces it when it would

- send local work to a decode worker the host cannot see (unknown, stale, unhealthy) or that does
  not run local prefills (reason :data:`STATE_UNKNOWN` / :data:`NOT_PPD_CAPABLE`): a worker we
  cannot see could be saturated;
- push a decode worker's predicted step past its TBT budget (reason :data:`TBT_BUDGET`): the
  chunk the worker will run (:func:`core.chunk.run_len`, never under ``min_chunk_len`` while decodes
  are resident) mixed into its residents' step must stay within the TPOT SLO, or the worker's own
  ``--ppd-tbt-slo-ms`` where tighter (the deflection paper's "within beta*TBT" rule, applied to
  appends too). A prefill that starts on an idle worker is held to the same rule unless it ends
  in one iteration: residents that arrive while it runs (PD transfers land on any D) would
  otherwise share every one of its floored, over-budget chunks. Without any prefill worker the
  route stands: serving late beats not serving.

The replacement PD route keeps the decode worker when it is healthy and takes the prefill worker
with the fewest in-flight requests (first in snapshot order on ties).
"""

from __future__ import annotations

from sglang_ppd.core.chunk import MIN_CHUNK_LEN, run_len
from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.stepmodel import StepModel, tbt_budget_ms
from sglang_ppd.core.types import (
    ClusterSnapshot,
    RequestFeatures,
    Role,
    Route,
    RouteKind,
    Slo,
    WorkerSnapshot,
)

STATE_UNKNOWN = "guard:state_unknown"
NOT_PPD_CAPABLE = "guard:not_ppd_capable"
TBT_BUDGET = "guard:tbt_budget"


def tbt_chunk(
    m: StepModel, d: WorkerSnapshot, fresh: bool, prompt_len: int, new_len: int, budget_ms: float,
    cap: int, min_chunk_len: int = MIN_CHUNK_LEN,
) -> int:  # fmt: skip
    """The chunk ``d`` will run for a prefill of ``new_len`` tokens (of ``prompt_len``) capped at
    ``cap``, or 0 when that chunk breaks ``budget_ms`` for ``d``'s residents."""
    cap = max(min(cap, m.chunk_len), 1)
    residents = m.residents(d, fresh)
    if not residents and new_len <= cap:
        return cap  # one iteration: a resident arriving meanwhile waits for it once, not per step
    extra = m.decode_step_ms(d, fresh, prompt_len) - m.dec_base_ms if residents else 0.0
    fit = m.max_chunk_len(prompt_len, extra, budget_ms, d.prefill_cost_factor)
    if fit < max(min(min_chunk_len, new_len), 1):
        return 0
    return run_len(fit, cap, min_chunk_len, bool(residents))


def guard(
    route: Route, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo, m: StepModel,
    min_chunk_len: int = MIN_CHUNK_LEN,
) -> Route:  # fmt: skip
    if route.kind is RouteKind.PD:
        return route
    d = next((w for w in snap.workers if w.worker_id == route.decode_worker), None)
    why = None
    if d is None or not d.healthy or d.role is not Role.DECODE:
        why = STATE_UNKNOWN
    elif not d.supports_local_prefill:
        why = NOT_PPD_CAPABLE
    elif not d.is_fresh(slo.max_telemetry_age_ms):
        why = STATE_UNKNOWN
    else:
        cap = route.chunk_plan.chunk_len if route.chunk_plan is not None else m.chunk_len
        budget = tbt_budget_ms(d, slo)
        new_len = req.uncached_len(d.worker_id)
        if not tbt_chunk(m, d, True, req.prompt_len, new_len, budget, cap, min_chunk_len):
            why = TBT_BUDGET
    if why is None:
        return route
    ps = snap.prefill
    if not ps:
        if why == TBT_BUDGET:
            return route
        msg = f"{route.decode_worker} cannot prefill locally ({why}) and no prefill worker is healthy"
        raise NoRouteError(msg)
    p = min(ps, key=lambda w: w.num_inflight)
    if d is None or not d.healthy or d.role is not Role.DECODE:
        ds = snap.decode
        if not ds:
            raise NoRouteError("no healthy decode worker")
        d = min(ds, key=lambda w: w.num_inflight)
    return Route(RouteKind.PD, d.worker_id, prefill_worker=p.worker_id, reason=why)
