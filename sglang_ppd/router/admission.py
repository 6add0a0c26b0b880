"""In-flight slots for generate-type requests: ``max_inflight`` at once, ``max_queued`` waiting at
most ``max_queue_wait_s``. A request asks for its slot only once its body has been read
(:func:`sglang_ppd.router.front_door.read_body`), so a slow upload never holds one."""

from __future__ import annotations

import asyncio


class Admission:
    def __init__(self, max_inflight: int, max_queued: int, max_wait_s: float) -> None:
        self.max_inflight, self.max_queued, self.max_wait_s = max_inflight, max_queued, max_wait_s
        self._slots = asyncio.Semaphore(max_inflight)
        self.num_inflight = 0
        self.num_queued = 0

    async def acquire(self) -> str | None:
        """Take a slot; ``None`` once taken, else why not: ``"overloaded"`` (the queue is full:
        429) or ``"queue_timeout"`` (waited too long: 503). Release a taken slot with :meth:`release`."""
        if self.num_inflight >= self.max_inflight and self.num_queued >= self.max_queued:
            return "overloaded"
        if self._slots.locked():  # a free slot is taken at once (no wait_for task, no timer)
            self.num_queued += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self.max_wait_s)
            except asyncio.TimeoutError:
                return "queue_timeout"
            finally:
                self.num_queued -= 1
        else:
            await self._slots.acquire()
        self.num_inflight += 1
        return None

    def release(self) -> None:
        self.num_inflight -= 1
        self._slots.release()
