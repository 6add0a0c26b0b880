"""A circuit breaker per upstream worker, as sgl-router has one.

Health checks answer "is the process up?" every ``health_interval_s``; the breaker answers "do its
requests succeed?" from the data plane, at once. ``failure_threshold`` consecutive failed attempts
open the breaker: the worker gets no new requests for ``cooldown_s``. Then it is half-open: one
trial request may go through; its success closes the breaker, its failure opens it again for
another cooldown. A success in the closed state resets the count. Only failures the worker is to
blame for count (connection errors, 5xx, broken streams, timeouts); a 4xx is a worker that answers,
so it counts as a success.

A trial that ends in neither (its client left before the first token) must give the trial back,
or the breaker would stay half-open with a trial "in flight" forever and lock the worker out:
:meth:`Breaker.on_dispatch` hands out a trial number and :meth:`Breaker.release` returns it (a late
release of an older trial never frees a newer one).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


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
    trial: int | None = None
    """The number of the half-open trial in flight, if any."""
    num_trials: int = 0
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
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and self.trial is None)

    def on_dispatch(self) -> int | None:
        """A request goes to the worker; in the half-open state it is the trial: its number."""
        if self.state is not BreakerState.HALF_OPEN:
            return None
        self.num_trials += 1
        self.trial = self.num_trials
        return self.trial

    def release(self, trial: int) -> None:
        """The trial ended with no verdict (its client left): the next request may try."""
        if self.trial == trial:
            self.trial = None

    def on_success(self) -> None:
        self.num_failures, self.opened_at_s, self.trial = 0, None, None

    def on_failure(self) -> None:
        self.num_failures += 1
        half_open = self.state is BreakerState.HALF_OPEN
        if half_open or (self.opened_at_s is None and self.num_failures >= self.failure_threshold):
            self.opened_at_s = self.clock()
            self.num_opened += 1
        self.trial = None
