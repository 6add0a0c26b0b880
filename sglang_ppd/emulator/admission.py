"""Admitting a request to the emulated worker: what it refuses, and what it holds while resident.

:func:`admitted_mode` resolves the mode a request runs in here and refuses, with the status SGLang
would answer, what this worker cannot take: an aggregated request to a disaggregated server, a
bootstrap room already in use, a request larger than the whole KV pool. :meth:`Active.enter` gives
an admitted request its state: its prompt's page chain, and its radix hit, locked against eviction
until it leaves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sglang_ppd.core.types import Role
from sglang_ppd.emulator import tokens
from sglang_ppd.emulator.bootstrap import Rooms
from sglang_ppd.emulator.config import EngineConfig
from sglang_ppd.emulator.pages import PageChain
from sglang_ppd.emulator.radix import RadixCache
from sglang_ppd.emulator.request import GenerateInput, Mode, RequestError, RequestHandle


def admitted_mode(cfg: EngineConfig, inp: GenerateInput, rooms: Rooms, capacity: int) -> Mode:
    """The mode ``inp`` runs in on this worker; raises :class:`RequestError` if it is refused."""
    mode = inp.mode
    if mode is Mode.AGGREGATED:
        if cfg.role is Role.DECODE and cfg.ppd:
            mode = Mode.LOCAL
        else:
            raise RequestError(
                f"this emulated {cfg.role.value} server runs disaggregated: send bootstrap_host, "
                "bootstrap_port and bootstrap_room (or do_local_prefill to a --ppd decode server)"
            )
    if mode is Mode.PD_PREFILL and inp.bootstrap is not None:
        taken = rooms.peek(inp.bootstrap.room)
        if taken is not None and taken.rid is not None:
            raise RequestError(f"bootstrap_room {inp.bootstrap.room} is already in use here", 409)
    need = len(inp.input_ids) + (inp.max_new_tokens if cfg.role is Role.DECODE else 0)
    if need > capacity:
        raise RequestError(f"request needs {need} KV tokens; this worker holds {capacity}")
    return mode


@dataclass(slots=True)
class Active:
    handle: RequestHandle
    chain: PageChain
    digest: bytes
    locked: list[int]
    allocated: asyncio.Future[int] | None = None
    room: int | None = None
    transfers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def enter(cls, inp: GenerateInput, radix: RadixCache, page_size: int, retain: bool) -> tuple[Active, int]:
        """A new resident request and its radix hit (0 without ``retain``), whose pages it locks."""
        handle = RequestHandle(inp)
        chain = PageChain.of(inp.input_ids, page_size)
        hashes = chain.hashes
        hit = radix.match(hashes) if retain else 0
        locked = hashes[: hit // page_size]
        radix.lock(locked)
        handle.cached_tokens = min(hit, len(inp.input_ids) - 1)
        return cls(handle, chain, tokens.prompt_digest(inp.input_ids), locked), hit
