"""The per-iteration local-prefill token budget, from the TBT SLO and measured iteration times.

A mixed iteration (prefill chunks + the running decodes) costs about the decode-only iteration plus
``overhead + ms_per_token * chunk_tokens``: the overhead is mostly losing the decode CUDA graph.
Both terms are re-estimated from the worker's own recent mixed iterations by least squares, so
the budget follows the real GPU instead of a fixed profile.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class IterationSample:
    iter_ms: float
    prefill_tokens: int
    """New prefill tokens in the iteration (0: decode-only)."""
    num_decodes: int
    info: Mapping[str, Any] | None = None
    """Whatever the caller attached at launch (the iteration log's batch description)."""


class Ewma:
    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


class IterationModel:
    """Decode-only and mixed iteration times, and the mixed-iteration cost line over chunk size."""

    def __init__(
        self,
        prior_ms_per_token: float,
        prior_overhead_ms: float,
        alpha: float = 0.2,
        window: int = 64,
        min_fit_samples: int = 4,
    ) -> None:
        self.decode_ms = Ewma(alpha)
        self.mixed_ms = Ewma(alpha)
        self._excess: deque[tuple[int, float]] = deque(maxlen=window)
        self._prior = (prior_overhead_ms, prior_ms_per_token)
        self._min_fit_samples = min_fit_samples

    def add(self, s: IterationSample) -> None:
        if s.iter_ms <= 0 or not math.isfinite(s.iter_ms):
            return
        if s.prefill_tokens == 0:
            if s.num_decodes > 0:
                self.decode_ms.add(s.iter_ms)
            return
        self.mixed_ms.add(s.iter_ms)
        base = self.decode_ms.value if s.num_decodes > 0 and self.decode_ms.value is not None else 0.0
        self._excess.append((s.prefill_tokens, s.iter_ms - base))

    def cost_line(self) -> tuple[float, float]:
        """(overhead_ms, ms_per_token) of a mixed iteration beyond the decode-only one."""
        n = len(self._excess)
        if n < self._min_fit_samples:
            return self._prior
        mean_x = sum(x for x, _ in self._excess) / n
        mean_y = sum(y for _, y in self._excess) / n
        sxx = sum((x - mean_x) ** 2 for x, _ in self._excess)
        if sxx <= 0:
            # One chunk size only: keep the prior overhead, attribute the rest to the tokens.
            return self._prior[0], max((mean_y - self._prior[0]) / max(mean_x, 1.0), 1e-6)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in self._excess) / sxx
        slope = max(slope, 1e-6)
        return max(mean_y - slope * mean_x, 0.0), slope


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    tbt_slo_ms: float | None
    min_chunk_len: int
    max_chunk_len: int

    def tokens(self, model: IterationModel, has_decodes: bool, request_cap: int | None = None) -> int:
        """New local-prefill tokens this iteration may carry.

        Without decodes there is no TBT to protect: the whole ``max_chunk_len``. With decodes, the
        largest chunk whose predicted mixed iteration stays inside the SLO, but never less than
        ``min_chunk_len`` (a deflected prefill must progress). ``request_cap`` is the router's
        ``ppd_chunk_len`` for the request at the head of the local queue.
        """
        cap = self.max_chunk_len if request_cap is None else max(min(request_cap, self.max_chunk_len), 1)
        if not has_decodes or self.tbt_slo_ms is None:
            return cap
        overhead_ms, ms_per_token = model.cost_line()
        decode_ms = model.decode_ms.value or 0.0
        headroom_ms = self.tbt_slo_ms - decode_ms - overhead_ms
        fit = int(headroom_ms / ms_per_token) if headroom_ms > 0 else 0
        return max(min(fit, cap), min(self.min_chunk_len, cap))

    def headroom_ms(self, model: IterationModel) -> float | None:
        if self.tbt_slo_ms is None or model.decode_ms.value is None:
            return None
        return self.tbt_slo_ms - model.decode_ms.value


class IterationClock:
    """Turns scheduler wake-up times into per-iteration durations.

    The scheduler loop blocks on the previous batch's result once per iteration, so the time
    between two scheduling calls is one GPU iteration. With SGLang's overlap scheduler that
    iteration is the batch launched one call earlier (``lag=1``); without it, the one just
    launched (``lag=0``). An idle loop (no batch launched) breaks the chain.
    """

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self._last_t: float | None = None
        self._launched: deque[tuple[int, int, Mapping[str, Any] | None]] = deque(maxlen=lag + 1)

    def tick(self, now_s: float) -> IterationSample | None:
        """Call at each scheduling call, before launching; returns the iteration that just ended."""
        done: IterationSample | None = None
        if self._last_t is not None and len(self._launched) == self.lag + 1:
            prefill_tokens, num_decodes, info = self._launched[0]
            done = IterationSample((now_s - self._last_t) * 1000.0, prefill_tokens, num_decodes, info)
        self._last_t = now_s
        return done

    def launched(self, prefill_tokens: int, num_decodes: int, info: Mapping[str, Any] | None = None) -> None:
        self._launched.append((prefill_tokens, num_decodes, info))

    def idle(self) -> None:
        self._launched.clear()
        self._last_t = None
