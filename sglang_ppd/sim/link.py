"""KV transfer links: finite bandwidth, FIFO, so a burst of transfers really queues."""

from __future__ import annotations

from collections import deque


class Link:
    """One FIFO pipe. ``enqueue`` returns when the transfer's last byte arrives."""

    def __init__(self, bandwidth_bytes_per_s: float, setup_ms: float) -> None:
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.setup_s = setup_ms / 1000.0
        self.free_at_s = 0.0
        self.bytes_total = 0
        self.num_transfers = 0
        self._recent: deque[tuple[float, float, float, int]] = deque()
        """(enqueued, started, done, bytes) of transfers that may still be queued at a past tick."""

    def enqueue(self, now_s: float, nbytes: int) -> float:
        start = max(now_s, self.free_at_s)
        done = start + self.setup_s + nbytes / self.bandwidth_bytes_per_s
        self.free_at_s = done
        self.bytes_total += nbytes
        self.num_transfers += 1
        self._recent.append((now_s, start, done, nbytes))
        return done

    def queued_bytes_at(self, at_s: float, horizon_s: float) -> int:
        """Bytes enqueued by ``at_s`` and not yet delivered then. Forgets transfers done before
        ``at_s - horizon_s`` (callers ask about ticks at most ``horizon_s`` old)."""
        recent = self._recent
        while recent and recent[0][2] < at_s - horizon_s:
            recent.popleft()
        total = 0.0
        for enq, start, done, nbytes in recent:
            if enq > at_s:
                break
            if done > at_s:
                total += nbytes if at_s <= start else nbytes * (done - at_s) / (done - start)
        return int(total)
