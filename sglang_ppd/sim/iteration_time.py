"""How long a scheduler iteration takes, and the smoothed per-step times a worker reports.

A decode leap is ``k`` decode-only steps of one batch composition taken as one event; each step is
``growth_ms`` slower than the last as every resident context grows by one token, so the leap lasts
T(k) = k·a + d·k(k-1)/2 for a first step of ``a`` ms. A leap cut short by new work keeps the steps
that end at or after the cut (the step in flight finishes).
"""

from __future__ import annotations

from sglang_ppd.sim.decode_batch import steps_reaching
from sglang_ppd.sim.iteration import Iteration

_EWMA = 0.2


def leap_ms(steps: int, first_step_ms: float, growth_ms: float) -> float:
    """T(k) of a leap of ``steps`` decode steps."""
    return steps * first_step_ms + growth_ms * steps * (steps - 1) / 2


def truncate_leap(it: Iteration, elapsed_ms: float, growth_ms: float) -> Iteration:
    """Cut a decode leap to the steps that end at or after ``elapsed_ms`` (the step in flight
    finishes). Returns ``it`` unchanged when nothing would be cut."""
    if it.num_steps <= 1 or elapsed_ms >= it.duration_ms:
        return it
    a = it.first_step_ms
    k = min(steps_reaching(elapsed_ms, a, growth_ms), it.num_steps)
    return Iteration(k, leap_ms(k, a, growth_ms), a, it.chunks, it.joined, it.num_decodes, it.context_tokens)


def smoothed(prev_ms: float | None, sample_ms: float) -> float:
    """Exponentially weighted per-step iteration time (the first sample starts it)."""
    return sample_ms if prev_ms is None else (1 - _EWMA) * prev_ms + _EWMA * sample_ms
