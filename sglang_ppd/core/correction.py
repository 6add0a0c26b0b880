"""Self-correction from traffic: a bounded online residual of the cost profile's prefill cost.

At dispatch the host records what the model predicts for the request's TTFT, split into the part
that is prefill work (:attr:`Prediction.prefill_ms`: the queue ahead of it and its own prefill, on
the worker that prefills it) and the rest (:attr:`Prediction.other_ms`: KV transfer, a decode step,
decode work mixed into a local prefill's steps). At the first token it feeds the realized TTFT to
that worker's :class:`Residual`, whose factor estimates realized/predicted prefill time:

    ratio = (realized - other) / prefill,   factor <- factor^(1-alpha) * ratio^alpha   (clamped)

A geometric EWMA, so 2x too slow and 2x too fast move it alike. Both the ratio and the factor are
clamped to [``MIN_FACTOR``, ``MAX_FACTOR``]: one stalled request cannot swing it further than the
clamp, and an absurd sample (non-finite, or a prediction too small to measure against) is dropped
and counted. The factor reaches the pure policy through the snapshot
(``WorkerSnapshot.prefill_cost_factor``), never as global state: the policies' estimator scales
that worker's prefill estimates by it (P queue and compute, local/deflected chunks, the TBT fit).

P workers learn from PD routes, decode workers from their local and deflected prefills: the factor
is per worker and, through the role, per route kind. A worker with fewer than
``MIN_OWN_SAMPLES`` samples of its own uses the cluster-wide residual (:func:`factor_of`): every
worker serves one model on one GPU type with one profile, and decode workers see few local
prefills (none at all while the wrong profile keeps refusing them), so their own factor would
otherwise stay at the profile's error longest where it matters most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sglang_ppd.core.chunk import MIN_CHUNK_LEN, run_len
from sglang_ppd.core.stepmodel import StepModel, tbt_budget_ms
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo

MIN_FACTOR = 0.25
MAX_FACTOR = 4.0
ALPHA = 0.1
"""Weight of one sample: about 20 requests to move most of the way to a new level."""
MIN_OWN_SAMPLES = 8
MIN_PREDICTED_MS = 5.0
"""A predicted prefill shorter than this is mostly the noise of the rest: not a sample."""


@dataclass(frozen=True, slots=True)
class Prediction:
    worker_id: str
    """The worker whose prefill cost this prediction measures (P for PD, D otherwise)."""
    prefill_ms: float
    other_ms: float


class Residual:
    """One worker's correction factor (a bounded EWMA ratio) and its sample counts."""

    __slots__ = ("factor", "num_samples", "num_dropped")

    def __init__(self) -> None:
        self.factor = 1.0
        self.num_samples = 0
        self.num_dropped = 0

    def update(self, pred: Prediction, realized_ms: float) -> None:
        if not (math.isfinite(realized_ms) and realized_ms > 0 and pred.prefill_ms >= MIN_PREDICTED_MS):
            self.num_dropped += 1
            return
        ratio = (realized_ms - pred.other_ms) / pred.prefill_ms
        ratio = min(max(ratio, MIN_FACTOR), MAX_FACTOR)
        f = math.exp((1 - ALPHA) * math.log(self.factor) + ALPHA * math.log(ratio))
        self.factor = min(max(f, MIN_FACTOR), MAX_FACTOR)
        self.num_samples += 1


def factor_of(own: Residual, pooled: Residual) -> float:
    """The factor a worker's snapshot carries: its own once it has ``MIN_OWN_SAMPLES``, else the
    cluster-wide one."""
    return own.factor if own.num_samples >= MIN_OWN_SAMPLES else pooled.factor


def predict_ttft(
    route: Route, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo, m: StepModel, kv_bytes_per_token: int
) -> Prediction | None:
    """The uncorrected model's TTFT for ``route`` from the snapshot it was decided on (``None``
    when the route names a worker the snapshot lacks)."""
    by_id = {w.worker_id: w for w in snap.workers}
    d = by_id.get(route.decode_worker)
    if d is None:
        return None
    prompt_len = req.prompt_len
    fresh_d = d.age_ms is not None
    if route.kind is RouteKind.PD:
        p = by_id.get(route.prefill_worker or "")
        if p is None:
            return None
        hit = req.hit_len(p.worker_id)
        queued = p.queued_prefill_tokens
        if queued is None:
            queued = p.num_inflight * prompt_len
        prefill = m.queue_ms(queued, prompt_len) + m.chunked_ms(prompt_len - hit, hit, m.chunk_len, 0.0)
        sent = prompt_len - req.hit_len(d.worker_id)
        link = snap.link
        transfer = 1000.0 * (sent * kv_bytes_per_token + link.queued_bytes) / link.bandwidth_bytes_per_s
        return Prediction(p.worker_id, prefill, transfer + m.decode_step_ms(d, fresh_d, prompt_len))
    hit = req.hit_len(d.worker_id)
    new_len = prompt_len - hit
    plan = route.chunk_plan.chunk_len if route.chunk_plan is not None else m.chunk_len
    residents = StepModel.residents(d, fresh_d)
    extra = m.decode_step_ms(d, fresh_d, prompt_len) - m.dec_base_ms if residents else 0.0
    # The chunk the worker runs: within its TBT budget while decodes are resident, sized at the
    # current factor (so the residual measures the price of a chunk, not an error in its size).
    budget = tbt_budget_ms(d, slo)
    fit = m.max_chunk_len(prompt_len, extra, budget, d.prefill_cost_factor) if residents else plan
    chunk = max(run_len(fit, min(plan, m.chunk_len), MIN_CHUNK_LEN, bool(residents)), 1)
    prefill = m.queue_ms(d.queued_prefill_tokens or 0, prompt_len) + m.chunked_ms(new_len, hit, chunk, 0.0)
    return Prediction(d.worker_id, prefill, -(-max(new_len, 1) // chunk) * extra)
