"""The local-prefill queue and its KV admission, shared by preallocated transfers and local prefills.

Both paths draw on one KV pool. A PD request's KV is allocated up front by SGLang's prealloc queue,
so it is already out of the pool; what the pool must still cover is the decode growth SGLang
reserves for every resident or transferring request, and the tokens that local prefills admitted
but not yet fully computed will allocate chunk by chunk. This module keeps the second number
(:meth:`LocalQueue.reserved_tokens`), which the extension subtracts from the prealloc queue's
budget, and admits local requests only against what remains after the first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass(slots=True)
class LocalEntry(Generic[R]):
    req: R
    prompt_len: int
    route: str
    chunk_len: int | None
    uncached_len: int | None = None
    """Known once matched against the decode radix cache at admission."""


@dataclass(slots=True)
class LocalQueue(Generic[R]):
    """FIFO of local/deflected requests not yet handed to SGLang's prefill scheduler.

    ``inflight`` are the entries handed over whose prefill has not finished (a chunked request or
    one in the batch just launched); they keep their KV reservation until :meth:`prefill_done`.
    """

    reserve_decode_tokens: int
    waiting: deque[LocalEntry[R]] = field(default_factory=deque)
    inflight: dict[int, LocalEntry[R]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.waiting)

    def __iter__(self) -> Iterator[LocalEntry[R]]:
        return iter(self.waiting)

    def push(self, entry: LocalEntry[R]) -> None:
        self.waiting.append(entry)

    def push_front(self, entries: list[LocalEntry[R]]) -> None:
        """Requests handed over but not scheduled go back first, in their order."""
        for e in reversed(entries):
            self.inflight.pop(id(e.req), None)
            self.waiting.appendleft(e)

    def remove(self, pred: Callable[[R], bool]) -> list[R]:
        gone = [e.req for e in self.waiting if pred(e.req)]
        self.waiting = deque(e for e in self.waiting if not pred(e.req))
        return gone

    def prefill_done(self, req: R) -> None:
        self.inflight.pop(id(req), None)

    def queued_tokens(self) -> int:
        return sum(e.uncached_len if e.uncached_len is not None else e.prompt_len for e in self.waiting)

    def reserved_tokens(self, remaining_of: Callable[[R], int]) -> int:
        """KV the admitted, unfinished local prefills will still allocate, plus their decode reserve."""
        return sum(remaining_of(e.req) + self.reserve_decode_tokens for e in self.inflight.values())

    def admit(
        self,
        allocatable_tokens: int,
        free_req_slots: int,
        uncached_len_of: Callable[[R], int],
        max_reqs: int,
    ) -> list[LocalEntry[R]]:
        """Pops, in FIFO order, the head requests whose KV fits; stops at the first that does not.

        ``allocatable_tokens`` is what the pool can give after SGLang's reservations for running,
        transferring and retracted requests. A request needs its uncached tokens plus the decode
        reserve. Head-of-line blocking is deliberate: a large deflected prefill is not starved by
        later small appends.
        """
        admitted: list[LocalEntry[R]] = []
        budget = allocatable_tokens
        while self.waiting and len(admitted) < min(max_reqs, free_req_slots):
            head = self.waiting[0]
            head.uncached_len = uncached_len_of(head.req)
            need = head.uncached_len + self.reserve_decode_tokens
            if need > budget:
                break
            budget -= need
            admitted.append(self.waiting.popleft())
            self.inflight[id(head.req)] = head
        return admitted
