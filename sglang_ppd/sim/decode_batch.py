"""A worker's running decode batch as a step counter: O(1) per step whatever the batch size.

Each request's finish step sits in a heap and its context is stored as an offset from the step
counter, so the batch's total context is ``sum_off + len * step`` and a step only bumps ``step``.
"""

from __future__ import annotations

import heapq
import math


class DecodeBatch:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, int]] = []
        """(finish step, tie, request id, context offset)."""
        self._sum_off = 0
        self._step = 0
        self._tie = 0

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def context_tokens(self) -> int:
        return self._sum_off + len(self._heap) * self._step

    def join(self, rid: str, context_len: int, num_steps: int) -> None:
        """Add a request holding ``context_len`` tokens that finishes after ``num_steps`` steps."""
        self._tie += 1
        off = context_len - self._step
        heapq.heappush(self._heap, (self._step + num_steps, self._tie, rid, off))
        self._sum_off += off

    def steps_to_first_finish(self) -> int:
        return self._heap[0][0] - self._step

    def advance(self, num_steps: int) -> list[str]:
        """Run ``num_steps`` steps; returns the requests that finished, in finish order."""
        self._step += num_steps
        done = []
        while self._heap and self._heap[0][0] <= self._step:
            _, _, rid, off = heapq.heappop(self._heap)
            self._sum_off -= off
            done.append(rid)
        return done

    def remove(self, rid: str) -> int | None:
        """Take a request out (a cancel); returns its current context length, None if absent.
        O(batch), which a rare cancel can afford."""
        for i, (_, _, r, off) in enumerate(self._heap):
            if r == rid:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                self._sum_off -= off
                return off + self._step
        return None

    def audit(self) -> None:
        if self._sum_off != sum(off for *_, off in self._heap):
            raise AssertionError(f"decode context drift: {self._sum_off} != Σ offsets")


def steps_reaching(elapsed_ms: float, first_step_ms: float, growth_ms: float) -> int:
    """The least k ≥ 1 whose leap of k steps, T(k) = k·a + d·k(k-1)/2 (each step ``growth_ms``
    slower than the last as contexts grow), lasts at least ``elapsed_ms``."""
    a, d = first_step_ms, growth_ms
    if d <= 0:
        k = max(int(elapsed_ms / a), 1)
    else:
        b = a - d / 2
        k = max(int((-b + math.sqrt(b * b + 2 * d * elapsed_ms)) / d), 1)
    while k > 1 and k * a + d * k * (k - 1) / 2 >= elapsed_ms:
        k -= 1
    while k * a + d * k * (k - 1) / 2 < elapsed_ms:
        k += 1
    return k
