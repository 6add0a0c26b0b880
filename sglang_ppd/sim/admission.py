"""A request's state on one worker, and the FCFS queue of requests not yet admitted to KV.

Two kinds of request wait for KV on a worker: local prefills (``waiting``, admitted when an
iteration has room for a chunk) and, on decode workers, incoming PD transfers (``prealloc``,
SGLang's prealloc queue). Both are admitted in one arrival order: the oldest request goes first,
so a big request blocks newer ones, as in SGLang's FCFS, instead of starving behind them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class WorkerRequest:
    rid: str
    session_id: str
    prompt_len: int
    output_len: int
    shared_prefix_len: int
    chunk_len: int | None = None
    hit_len: int = 0
    done_len: int = 0
    alloc_tokens: int = 0
    seq: int = 0
    """Order of arrival on this worker: admission is FCFS across transfers and local prefills."""
    queued_est: int = 0
    """Uncached prompt tokens as estimated when queued (for the queued-prefill telemetry)."""


class AdmissionQueue:
    """Local prefills and PD transfers waiting for KV, in arrival order."""

    def __init__(self) -> None:
        self.waiting: deque[WorkerRequest] = deque()
        self.prealloc: deque[WorkerRequest] = deque()
        self._tie = 0

    def next_seq(self) -> int:
        """Arrival stamp for a new request on this worker."""
        self._tie += 1
        return self._tie

    def local_turn(self) -> bool:
        """The oldest waiting local prefill is next: no older transfer waits for KV."""
        return bool(self.waiting) and (not self.prealloc or self.waiting[0].seq < self.prealloc[0].seq)

    def transfer_turn(self) -> bool:
        """The oldest queued transfer is next: no older local prefill waits."""
        return bool(self.prealloc) and (not self.waiting or self.prealloc[0].seq < self.waiting[0].seq)

    def withdraw(self, r: WorkerRequest) -> bool:
        """Take a request out of the queue; False if it was not queued (admitted already)."""
        for q in (self.waiting, self.prealloc):
            if r in q:
                q.remove(r)
                return True
        return False

    def __len__(self) -> int:
        return len(self.waiting) + len(self.prealloc)
