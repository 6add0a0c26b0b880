"""R router replicas behind one load balancer: each router's own books of what it sent where.

Every replica subscribes to every worker's KV events and telemetry, so the prefix hits and the
published load (with its age) are the same in all of them. What differs is the router's own
account of its requests: ``num_inflight``, ``num_local_inflight`` and the lifecycle since the last
sample (``core.lifecycle``), which is what keeps a router from herding onto one worker between
telemetry samples. Each (router, worker) pair has its :class:`Books`; a replica sees only its own
requests there unless peer sync is on.

Peer sync (``peer_sync_ms`` set): a replica publishes each change of its books to its peers, who
apply it ``peer_sync_ms`` later (a ZMQ PUB/SUB hop). A change delivered before a telemetry sample
is applied before the sample resets the lifecycle, one delivered after it is applied after, so a
synced peer's request is counted exactly once, as the router that sent it counts it.

The load balancer (HAProxy's algorithms, sessions not sticky unless ``session`` is chosen):

- ``roundrobin``: request i goes to replica i mod R (HAProxy ``balance roundrobin``, equal weights);
- ``leastconn``: the replica with the fewest open requests, round robin among the tied (HAProxy
  ``balance leastconn``); a request's connection is open from arrival to its last token;
- ``session``: a hash of the session id (HAProxy ``balance hdr(X-Session-Id)``), so every turn
  of a conversation goes through the same replica.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from sglang_ppd.core.lifecycle import Lifecycle

Balance = Literal["roundrobin", "leastconn", "session"]

DISPATCH, DISPATCH_LOCAL, DISPATCH_PREFILL, FIRST_TOKEN_LOCAL, RELEASE_PREFILL, FINISH = range(6)
"""Changes to a router's books of one worker (the ops a replica publishes to its peers)."""


@dataclass(slots=True)
class Books:
    """One router's account of the requests on one worker: its own exactly, its peers' as synced."""

    num_inflight: int = 0
    num_local_inflight: int = 0
    """LOCAL/DEFLECT routes sent here whose first token has not been seen yet."""
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    pending: deque[tuple[float, int, str, int, int]] = field(default_factory=deque)
    """Peers' changes not yet delivered: (deliver_s, op, request_id, prompt_len, output_len)."""

    def apply(self, op: int, request_id: str = "", prompt_len: int = 0, output_len: int = 0) -> None:
        if op in (DISPATCH, DISPATCH_LOCAL):
            self.num_inflight += 1
            self.lifecycle.on_dispatch(request_id, prompt_len, output_len)
            if op == DISPATCH_LOCAL:
                self.num_local_inflight += 1
        elif op == DISPATCH_PREFILL:
            self.num_inflight += 1
        elif op == FIRST_TOKEN_LOCAL:
            self.num_local_inflight -= 1
        elif op == RELEASE_PREFILL:
            self.num_inflight -= 1
        else:
            self.num_inflight -= 1
            self.lifecycle.on_finish(request_id)

    def deliver(self, until_s: float) -> None:
        """Apply the peers' changes that have arrived by ``until_s``, in the order they were made."""
        pending = self.pending
        while pending and pending[0][0] <= until_s:
            _, op, rid, prompt_len, output_len = pending.popleft()
            self.apply(op, rid, prompt_len, output_len)

    def on_sample(self, tick_s: float) -> None:
        """A telemetry sample taken at ``tick_s`` reached this router."""
        self.deliver(tick_s)
        self.lifecycle.on_sample()


class RouterTier:
    """R replicas and the load balancer in front of them; owns which replica serves a request."""

    __slots__ = ("num_routers", "balance", "peer_sync_s", "_next", "_open", "num_synced_ops")

    def __init__(self, num_routers: int, balance: Balance, peer_sync_ms: float | None) -> None:
        if num_routers < 1:
            raise ValueError(f"num_routers must be >= 1, got {num_routers}")
        self.num_routers, self.balance = num_routers, balance
        self.peer_sync_s = None if peer_sync_ms is None else peer_sync_ms / 1000.0
        self._next = 0
        self._open = [0] * num_routers
        """requests each replica is serving (arrival to last token): HAProxy's connection count"""
        self.num_synced_ops = 0

    def pick(self, session_id: str) -> int:
        """The replica the load balancer sends the next request to; call :meth:`close` at its end."""
        n = self.num_routers
        if self.balance == "session":
            r = zlib.crc32(session_id.encode()) % n
        elif self.balance == "leastconn":
            low = min(self._open)
            r = next(i % n for i in range(self._next, self._next + n) if self._open[i % n] == low)
            self._next = (r + 1) % n
        else:
            r = self._next
            self._next = (r + 1) % n
        self._open[r] += 1
        return r

    def close(self, router: int) -> None:
        self._open[router] -= 1

    def record(
        self,
        now_s: float,
        books: list[Books],
        router: int,
        op: int,
        request_id: str = "",
        prompt_len: int = 0,
        output_len: int = 0,
    ) -> None:
        """``router`` changed its books of one worker (``books``: every replica's books of it)."""
        books[router].apply(op, request_id, prompt_len, output_len)
        if self.peer_sync_s is None:
            return
        deliver_s = now_s + self.peer_sync_s
        for q, b in enumerate(books):
            if q != router:
                b.pending.append((deliver_s, op, request_id, prompt_len, output_len))
                self.num_synced_ops += 1
