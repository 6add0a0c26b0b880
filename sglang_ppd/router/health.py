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
from typing import TYPE_CHECKING, Any

import aiohttp

from sglang_ppd.core.guard import STATE_UNKNOWN
from sglang_ppd.core.types import Role

if TYPE_CHECKING:
    from sglang_ppd.router.service import Router
    from sglang_ppd.router.workers import WorkerState

log = logging.getLogger(__name__)
UNKNOWN_STATE_REASON = STATE_UNKNOWN


class Reliability:
    """Per-router failure bookkeeping: pending probes and counters (each worker's breaker and health
    live in its :class:`~sglang_ppd.router.workers.WorkerState`)."""

    def __init__(self, router: Router) -> None:
        self.router = router
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
        return {w.url for w in self.router.registry.all() if not w.breaker.allows()}

    def silent_decodes(self, now_s: float) -> set[str]:
        """Decode workers whose telemetry stopped ``decode_silent_after_s`` ago (a stopped process)
        while another decode's has not: they get no new request. When every decode is silent (a
        telemetry outage), none is excluded: the guard then keeps routes PD, as for unknown state."""
        max_age = self.router.cfg.decode_silent_after_s * 1000.0
        decodes = [w for w in self.router.registry.by_role(Role.DECODE) if w.healthy]
        silent = {w.url for w in decodes if w.silent(now_s, max_age)}
        return silent if len(silent) < len(decodes) else set()

    def state_known(self, w: WorkerState, now_s: float | None = None) -> bool:
        age = w.age_ms(time.monotonic() if now_s is None else now_s)
        return (
            w.healthy
            and w.breaker.allows()
            and age is not None
            and age <= self.router.slo.max_telemetry_age_ms
        )

    def audit_local(self, local_to: WorkerState, now_s: float) -> None:
        if not self.state_known(local_to, now_s):
            self.num_local_unknown_dispatched += 1

    # --- outcomes --------------------------------------------------------------------------------
    def after_failure(self, w: WorkerState, index_dropped: bool, connection_lost: bool) -> None:
        """A request failed on ``w``, which is to blame. A lost connection may mean the process is
        gone: it is probed now, not at the next health tick."""
        if index_dropped:
            self.num_index_drops += 1
            log.warning("dropped the prefix index of %s: its connection failed", w.name)
        if connection_lost:
            self.probe_soon(w)

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
            router.note_failure(w, refused=True)
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
            "breakers": {w.url: w.breaker.state.value for w in self.router.registry.all()},
            "local_overridden_unknown_state": self.num_local_overridden,
            "local_dispatched_unknown_state": self.num_local_unknown_dispatched,
            "prefix_index_drops": self.num_index_drops,
            "fast_evictions": self.num_fast_evictions,
            "subscriber_resets": {w.url: w.num_subscriber_resets for w in self.router.registry.all()},
        }
