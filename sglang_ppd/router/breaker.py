"""A circuit breaker per upstream worker, as sgl-router has one.

Health checks answer "is the process up?" every ``health_interval_s``; the breaker answers "do its
requests succeed?" from the data plane, at once. ``failure_threshold`` consecutive failed attempts
open the breaker: the worker gets no new requests for ``cooldown_s``. Then it is half-open: one
trial request may go through; its success closes the breaker, its failure opens it again for
another cooldown. A success in the closed state resets the count. Only failures the worker is to
blame for count (connection errors, 5xx, broken streams, timeouts), never a 4xx.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Breaker:
    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    num_failures: int = 0
    opened_at_s: float | None = None
    trial_in_flight: bool = False
    num_opened: int = 0

    @property
    def state(self) -> BreakerState:
        if self.opened_at_s is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at_s < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows(self) -> bool:
        """May a new request go to this worker now? (Does not claim the half-open trial.)"""
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self.trial_in_flight)

    def on_dispatch(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.trial_in_flight = True

    def on_success(self) -> None:
        self.num_failures, self.opened_at_s, self.trial_in_flight = 0, None, False

    def on_failure(self) -> None:
        self.num_failures += 1
        half_open = self.state is BreakerState.HALF_OPEN
        if half_open or (self.opened_at_s is None and self.num_failures >= self.failure_threshold):
            self.opened_at_s = self.clock()
            self.num_opened += 1
        self.trial_in_flight = False


@dataclass(slots=True)
class Breakers:
    """The breakers of all workers, created on first use (workers come and go at runtime)."""

    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    _by_url: dict[str, Breaker] = field(default_factory=dict)

    def get(self, url: str) -> Breaker:
        b = self._by_url.get(url)
        if b is None:
            b = self._by_url[url] = Breaker(self.failure_threshold, self.cooldown_s, self.clock)
        return b

    def blocked(self, urls: Iterable[str]) -> set[str]:
        """The workers among ``urls`` that may not take a new request now."""
        return {u for u in urls if u in self._by_url and not self._by_url[u].allows()}

    def forget(self, url: str) -> None:
        self._by_url.pop(url, None)

    def states(self) -> dict[str, str]:
        return {u: b.state.value for u, b in self._by_url.items()}
