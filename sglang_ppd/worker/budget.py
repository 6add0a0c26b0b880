"""The per-iteration local-prefill token budget, from the TBT SLO and measured iteration times.

A mixed iteration (prefill chunks + the running decodes) costs about the decode-only iteration plus
``overhead + ms_per_token * chunk_tokens``: the overhead is mostly losing the decode CUDA graph.
Both terms are re-estimated from the worker's own recent mixed iterations (a robust line fit), so
the budget follows the real GPU instead of a fixed profile: this is the worker's measured model of
the chunk cost that ``core.chunk.fit_len`` computes from the profile, and the chunk it runs follows
the same ``core.chunk.run_len`` rule (floor and cap) that the simulator and the guard apply.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sglang_ppd.core.chunk import run_len


@dataclass(frozen=True, slots=True)
class IterationSample:
    iter_ms: float
    prefill_tokens: int
    """New prefill tokens in the iteration (0: decode-only)."""
    num_decodes: int
    info: Mapping[str, Any] | None = None
    """Whatever the caller attached at launch (the iteration log's batch description)."""


def _median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


class IterationModel:
    """Recent decode-only and mixed iteration times, and the mixed-iteration cost line over chunk size.

    Medians and a Theil-Sen line, not means and least squares: an iteration that also absorbed
    request intake or a stall is a real but unrepresentative outlier, and one such sample must not
    collapse the budget for the next hundred iterations.
    """

    def __init__(
        self,
        prior_ms_per_token: float,
        prior_overhead_ms: float,
        window: int = 32,
        min_fit_samples: int = 4,
    ) -> None:
        self._decode: deque[float] = deque(maxlen=16)
        self._mixed: deque[float] = deque(maxlen=16)
        self._excess: deque[tuple[int, float]] = deque(maxlen=window)
        self._prior = (prior_overhead_ms, prior_ms_per_token)
        self._min_fit_samples = min_fit_samples
        self._line: tuple[float, float] | None = None

    @property
    def decode_ms(self) -> float | None:
        return _median(self._decode) if self._decode else None

    @property
    def mixed_ms(self) -> float | None:
        return _median(self._mixed) if self._mixed else None

    def add(self, s: IterationSample) -> None:
        if s.iter_ms <= 0 or not math.isfinite(s.iter_ms) or s.num_decodes == 0:
            return  # idle-server prefills say nothing about the cost of mixing into decodes
        if s.prefill_tokens == 0:
            self._decode.append(s.iter_ms)
            return
        self._mixed.append(s.iter_ms)
        self._excess.append((s.prefill_tokens, s.iter_ms - (self.decode_ms or 0.0)))
        self._line = None

    def cost_line(self) -> tuple[float, float]:
        """(overhead_ms, ms_per_token) of a mixed iteration beyond the decode-only one."""
        if self._line is None:
            self._line = self._fit()
        return self._line

    def _fit(self) -> tuple[float, float]:
        pts = list(self._excess)
        if len(pts) < self._min_fit_samples:
            return self._prior
        min_dx = max(8.0, 0.05 * max(x for x, _ in pts))
        slopes = [
            (y2 - y1) / (x2 - x1)
            for i, (x1, y1) in enumerate(pts)
            for x2, y2 in pts[i + 1 :]
            if abs(x2 - x1) >= min_dx
        ]
        if len(slopes) < self._min_fit_samples:
            # (Nearly) one chunk size: overhead and slope are not separable; keep the prior
            # overhead and charge the rest to the tokens, so the budget moves and spreads the sizes.
            mx, my = _median([x for x, _ in pts]), _median([y for _, y in pts])
            overhead = min(self._prior[0], max(my, 0.0))
            return overhead, max((my - overhead) / max(mx, 1.0), 1e-6)
        slope = max(_median(slopes), 1e-6)
        return max(_median([y - slope * x for x, y in pts]), 0.0), slope


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
        ``ppd_chunk_len`` for the request at the head of the local queue; it too is floored at
        ``min_chunk_len``: a router that believes a prefix is cached plans a chunk of the few tokens it
        expects, and when that belief is stale the prefill would crawl at that size (seen on the GPU:
        1500 tokens in 751 steps).
        """
        cap = self.max_chunk_len
        if request_cap is not None:
            cap = min(max(request_cap, self.min_chunk_len), self.max_chunk_len)
        if not has_decodes or self.tbt_slo_ms is None:
            return run_len(0, cap, self.min_chunk_len, False)
        overhead_ms, ms_per_token = model.cost_line()
        decode_ms = model.decode_ms or 0.0
        headroom_ms = self.tbt_slo_ms - decode_ms - overhead_ms
        fit = int(headroom_ms / ms_per_token) if headroom_ms > 0 else 0
        return run_len(fit, cap, self.min_chunk_len, True)

    def headroom_ms(self, model: IterationModel) -> float | None:
        decode_ms = model.decode_ms
        return None if self.tbt_slo_ms is None or decode_ms is None else self.tbt_slo_ms - decode_ms


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
