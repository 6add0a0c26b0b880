"""Worker failure handling on the data plane: breakers, fast eviction, and the unknown-state guard.

The periodic health loop (:mod:`sglang_ppd.router.service`) finds a dead idle worker within one
``health_interval_s``. Traffic finds it sooner, and this module acts on what traffic finds:

- every attempt's outcome feeds the worker's circuit breaker (:mod:`sglang_ppd.router.breaker`);
  workers whose breaker is open get no new requests;
- a connection-level failure (refused, reset, a stream cut mid-way) means the process may be gone,
  and its KV cache with it: the worker's prefix index is dropped at once (so the session's next turn
  routes PD, not local to a cache that no longer exists) and the worker is probed now, not at the
  next health tick; a refused probe evicts it;
- a local or deflected route is only dispatched to a decode worker whose state the router knows:
  healthy, breaker closed, telemetry younger than ``slo.max_telemetry_age_ms``. Otherwise the route
  becomes PD. Policies already fall back this way; the guard holds for plugin policies too and
  counts what it overrode (``/stats`` -> ``reliability``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp

from sglang_ppd.core.guard import STATE_UNKNOWN
from sglang_ppd.router.breaker import Breakers

if TYPE_CHECKING:
    from sglang_ppd.router.dispatch import UpstreamFailure
    from sglang_ppd.router.service import Router
    from sglang_ppd.router.workers import WorkerState

log = logging.getLogger(__name__)
UNKNOWN_STATE_REASON = STATE_UNKNOWN


class Reliability:
    """Per-router failure bookkeeping: breakers, pending probes and counters."""

    def __init__(self, router: Router) -> None:
        cfg = router.cfg
        self.router = router
        self.breakers = Breakers(cfg.breaker_failures, cfg.breaker_cooldown_s)
        self._probes: dict[str, asyncio.Task[None]] = {}
        self.inflight_rids: set[str] = set()
        """Client request ids being served (at most ``max_inflight``)."""
        self.num_local_overridden = 0
        """Local/deflected routes the policy chose onto a decode worker of unknown state (made PD)."""
        self.num_local_unknown_dispatched = 0
        """Local/deflected routes dispatched to a decode worker of unknown state: must stay 0."""
        self.num_index_drops = 0
        self.num_fast_evictions = 0

    # --- routing ---------------------------------------------------------------------------------
    def blocked(self) -> set[str]:
        return self.breakers.blocked(w.url for w in self.router.registry.all())

    def state_known(self, w: WorkerState, now_s: float | None = None) -> bool:
        age = w.age_ms(time.monotonic() if now_s is None else now_s)
        return (
            w.healthy
            and self.breakers.get(w.url).allows()
            and age is not None
            and age <= self.router.slo.max_telemetry_age_ms
        )

    def on_dispatch(self, urls: Iterable[str], local_to: WorkerState | None, now_s: float) -> None:
        if local_to is not None and not self.state_known(local_to, now_s):
            self.num_local_unknown_dispatched += 1
        for url in urls:
            self.breakers.get(url).on_dispatch()

    # --- outcomes --------------------------------------------------------------------------------
    def on_success(self, urls: Iterable[str]) -> None:
        for url in urls:
            self.breakers.get(url).on_success()

    def on_failure(self, failure: UpstreamFailure) -> None:
        """An attempt failed; ``failure.workers`` are to blame (never called for a worker's 4xx)."""
        connection_lost = failure.body is None and failure.status == 502
        for url in failure.workers:
            self.breakers.get(url).on_failure()
            w = self.router.registry.get(url)
            if w is None or not connection_lost:
                continue
            self.drop_index(w)
            self.probe_soon(w)

    def drop_index(self, w: WorkerState) -> None:
        dropped = False
        if w.exact_index is not None and w.exact_index.num_blocks():
            w.exact_index.clear()
            dropped = True
        if w.approx_index is not None and w.approx_index.num_blocks():
            w.approx_index.clear()
            dropped = True
        if dropped:
            self.num_index_drops += 1
            log.warning("dropped the prefix index of %s: its connection failed", w.url)

    def probe_soon(self, w: WorkerState) -> None:
        if w.url in self._probes:
            return
        task = asyncio.create_task(self._probe(w))
        self._probes[w.url] = task
        task.add_done_callback(lambda _: self._probes.pop(w.url, None))

    async def _probe(self, w: WorkerState) -> None:
        router = self.router
        try:
            async with router.control.get(f"{w.url}/health") as resp:
                ok = resp.status == 200
        except aiohttp.ClientConnectorError:
            if w.healthy:
                self.num_fast_evictions += 1
            router.note_failure(w, hard=True)
            return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        if not ok:
            router.note_failure(w)

    def close(self) -> None:
        for task in self._probes.values():
            task.cancel()

    def stats(self) -> dict[str, Any]:
        return {
            "breakers": self.breakers.states(),
            "local_overridden_unknown_state": self.num_local_overridden,
            "local_dispatched_unknown_state": self.num_local_unknown_dispatched,
            "prefix_index_drops": self.num_index_drops,
            "fast_evictions": self.num_fast_evictions,
            "subscriber_resets": {w.url: w.num_subscriber_resets for w in self.router.registry.all()},
        }
