"""The one chunk rule: how many local-prefill tokens a decode worker mixes into one decode step.

Two parts, shared by the estimator (``policies/.../estimate.py``), the simulator
(``sim/chunk_budget.py``), the guard (``core/guard.py``) and the worker extension
(``worker/budget.py``):

- :func:`fit_len`: the largest chunk whose prefill cost fits a time budget, from the additive step
  model (``core.costmodel``). The worker extension fits the same quantity online from its own
  iterations (``IterationModel.cost_line``, a line over the chunk size) instead of from the profile:
  that is the worker's *measured* model of this cost, not a second rule.
- :func:`run_len`: the chunk the worker then actually runs. While decodes are resident a chunk
  never runs fewer than ``min_chunk_len`` tokens (a local prefill must progress), so a fit below
  that floor overshoots the budget: the guard refuses such routes instead of letting the floor
  break the residents' TBT.
"""

from __future__ import annotations

import math

MIN_CHUNK_LEN = 64
"""The worker extension's and the simulator's default ``min_chunk_len``."""


def fit_len(c_pf_ms: float, c_attn_ms: float, c_ctx_ms: float, budget_ms: float, cached_len: int) -> int:
    """Largest χ with c_pf·χ + c_attn·χ(k + χ/2) + c_ctx·k <= ``budget_ms`` over k = ``cached_len``
    cached tokens; 0 when not even one token fits."""
    rest = budget_ms - c_ctx_ms * cached_len
    if rest <= 0:
        return 0
    a, b = c_attn_ms / 2, c_pf_ms + c_attn_ms * cached_len
    if a <= 0:
        if b <= 0:
            return 1 << 30  # a free chunk: the caller's cap applies
        return int(rest / b)
    return max(int((-b + math.sqrt(b * b + 4 * a * rest)) / (2 * a)), 0)


def run_len(fit: int, cap: int, min_chunk_len: int, has_decodes: bool) -> int:
    """The chunk a decode worker runs: ``cap`` (the route's plan or the worker's largest chunk)
    without resident decodes; with them ``fit`` within ``cap``, but at least ``min_chunk_len``."""
    if not has_decodes:
        return cap
    return max(min(fit, cap), min(min_chunk_len, cap))
