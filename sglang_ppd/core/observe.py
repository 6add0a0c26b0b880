"""The only place where a worker's published load becomes a :class:`WorkerSnapshot`.

Every host (the live router, the emulated cluster through the router, the simulator) turns what a
worker published into a :class:`Sample` with :func:`checked_sample`, and calls :func:`observe` with
it, the sample's age and the host's exact lifecycle since the sample (:class:`core.lifecycle.Since`).
So the same worker state gives the same snapshot in every host.

- Untrusted numbers: every field is checked (an int in range, a finite time in range); a bad field
  becomes ``None`` (unknown, which policies already handle) and is counted, never raised.
- Exact residents: the sample's ``num_running`` and ``running_context_tokens`` lose the requests the
  host saw finish after the sample and gain the ones it dispatched since. A resident is a request
  the decode worker holds, whether already decoding or about to (its KV arriving): both will share
  its steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sglang_ppd.core.lifecycle import NO_CHANGE, Since
from sglang_ppd.core.types import Role, WorkerSnapshot

MAX_COUNT = 1 << 20
"""More requests than any worker holds (SGLang caps running requests far below)."""
MAX_TOKENS = 1 << 40
"""More KV tokens than any pool holds."""
MAX_ITER_MS = 60_000.0
"""An iteration longer than a minute is a broken measurement, not a slow GPU."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One worker's published load, host-neutral, already checked. ``queued_prefill_tokens`` is
    the prompt tokens waiting to be prefilled there: on a decode worker, its local-prefill backlog
    (counted once)."""

    num_running: int | None = None
    num_waiting: int | None = None
    queued_prefill_tokens: int | None = None
    kv_used_tokens: int | None = None
    kv_capacity_tokens: int | None = None
    running_context_tokens: int | None = None
    num_local_prefills: int | None = None
    decode_iter_ms: float | None = None
    mixed_iter_ms: float | None = None
    tbt_budget_ms: float | None = None


def _count(x: object, hi: int) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= hi:
        return None
    return x


def _ms(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) and 0.0 < x <= MAX_ITER_MS else None


def checked_sample(
    num_running: object = None,
    num_waiting: object = None,
    queued_prefill_tokens: object = None,
    kv_used_tokens: object = None,
    kv_capacity_tokens: object = None,
    running_context_tokens: object = None,
    num_local_prefills: object = None,
    decode_iter_ms: object = None,
    mixed_iter_ms: object = None,
    tbt_budget_ms: object = None,
) -> tuple[Sample, int]:
    """The checked sample and how many given (non-``None``) fields were rejected."""
    raw = (num_running, num_waiting, queued_prefill_tokens, kv_used_tokens, kv_capacity_tokens,
           running_context_tokens, num_local_prefills, decode_iter_ms, mixed_iter_ms,
           tbt_budget_ms)  # fmt: skip
    cap = _count(kv_capacity_tokens, MAX_TOKENS)
    used = _count(kv_used_tokens, MAX_TOKENS)
    if cap is not None and used is not None and used > cap:
        used = None  # a pool cannot hold more than its size: the usage figure is the broken one
    s = Sample(
        num_running=_count(num_running, MAX_COUNT),
        num_waiting=_count(num_waiting, MAX_COUNT),
        queued_prefill_tokens=_count(queued_prefill_tokens, MAX_TOKENS),
        kv_used_tokens=used,
        kv_capacity_tokens=cap if cap else None,
        running_context_tokens=_count(running_context_tokens, MAX_TOKENS),
        num_local_prefills=_count(num_local_prefills, MAX_COUNT),
        decode_iter_ms=_ms(decode_iter_ms),
        mixed_iter_ms=_ms(mixed_iter_ms),
        tbt_budget_ms=_ms(tbt_budget_ms),
    )
    kept = (s.num_running, s.num_waiting, s.queued_prefill_tokens, s.kv_used_tokens, s.kv_capacity_tokens,
            s.running_context_tokens, s.num_local_prefills, s.decode_iter_ms, s.mixed_iter_ms,
            s.tbt_budget_ms)  # fmt: skip
    num_rejected = sum(1 for r, k in zip(raw, kept, strict=True) if r is not None and k is None)
    return s, num_rejected


def observe(
    worker_id: str,
    role: Role,
    sample: Sample | None,
    age_ms: float | None,
    *,
    num_inflight: int = 0,
    num_local_inflight: int = 0,
    since: Since = NO_CHANGE,
    supports_local_prefill: bool = False,
    healthy: bool = True,
    prefill_cost_factor: float = 1.0,
) -> WorkerSnapshot:
    """The snapshot of one worker: ``sample`` (``None``: nothing received) ``age_ms`` old,
    reconciled with the host's exact ``since`` and in-flight counts, with the host's measured
    ``prefill_cost_factor`` (``core.correction``)."""
    common = dict(
        num_inflight=max(num_inflight, 0),
        num_local_inflight=max(num_local_inflight, 0),
        supports_local_prefill=supports_local_prefill,
        healthy=healthy,
        resident_output_len=since.resident_output_len,
        prefill_cost_factor=prefill_cost_factor,
    )
    if sample is None or age_ms is None:
        return WorkerSnapshot(worker_id, role, None, **common)  # type: ignore[arg-type]
    running, ctx = sample.num_running, sample.running_context_tokens
    if running is not None:
        running = max(running - since.num_finished, 0) + since.num_dispatched
    if ctx is not None:
        ctx = max(ctx - since.finished_context_len, 0) + since.dispatched_context_len
    return WorkerSnapshot(
        worker_id, role, max(age_ms, 0.0),
        num_running=running, num_waiting=sample.num_waiting,
        queued_prefill_tokens=sample.queued_prefill_tokens,
        kv_used_tokens=sample.kv_used_tokens, kv_capacity_tokens=sample.kv_capacity_tokens,
        decode_iter_ms=sample.decode_iter_ms, mixed_iter_ms=sample.mixed_iter_ms,
        running_context_tokens=ctx, num_local_prefills=sample.num_local_prefills,
        tbt_budget_ms=sample.tbt_budget_ms, **common,  # type: ignore[arg-type]
    )  # fmt: skip
