"""The emulated worker's engine: the simulator's batch scheduler driven in real time from asyncio.

Each loop turn asks :class:`~sglang_ppd.sim.scheduler.BatchScheduler` for the next iteration,
sleeps its modelled duration (times ``time_scale``) against a drift-free deadline clock, completes
it, and turns the outcome into tokens on the HTTP streams, radix-cache updates (KV events), PD room
hand-offs and telemetry. Timing therefore matches the simulator by construction.

The scheduler's own prefix cache models sessions, not tokens; here the real radix cache decides hit
lengths, and each request enters the scheduler as its own "session" whose cached chain is exactly
its radix hit, so admission and KV accounting see the same hit the router sees in the KV events.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
from collections.abc import Callable

import aiohttp

from sglang_ppd.core.types import Role
from sglang_ppd.emulator import tokens
from sglang_ppd.emulator.admission import Active, admitted_mode
from sglang_ppd.emulator.bootstrap import MAX_LAG_S, Link, Rooms, fetch_kv
from sglang_ppd.emulator.config import EngineConfig
from sglang_ppd.emulator.pages import PageChain
from sglang_ppd.emulator.radix import RadixCache
from sglang_ppd.emulator.request import GenerateInput, Mode, RequestError, RequestHandle
from sglang_ppd.protocol.kv_events import KVEvent
from sglang_ppd.sim.scheduler import BatchScheduler, Iteration, Outcome

LEAP_STEPS = 64
"""Decode steps one iteration may cover when ``time_scale`` is 0."""


class Engine:
    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.role = cfg.role.value
        self.ppd = cfg.ppd
        self.model_name = cfg.model_name
        p = cfg.profile
        self.sched = BatchScheduler(
            cfg.role,
            p,
            retain_cache=False,
            kv_capacity_tokens=cfg.kv_capacity_tokens,
            chunked_prefill_size=cfg.chunked_prefill_size,
            tbt_budget_ms=cfg.tbt_budget_ms,
        )
        self.radix = RadixCache(cfg.page_size)
        self.retain = cfg.role is Role.PREFILL or cfg.decode_radix_cache
        self.rooms = Rooms()
        self.link = Link(p, cfg.link_bandwidth_bytes_per_s, cfg.time_scale)
        self._active: dict[str, Active] = {}
        self._decoding: set[str] = set()
        """Requests in the scheduler's decode batch: each gets one token per iteration."""
        self._joining: set[str] = set()
        """Requests that enter the decode batch at the next ``next_iteration`` call."""
        self._events: list[KVEvent] = []
        self._wake = asyncio.Event()
        self._woken_at: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.num_iterations = 0
        self.failure: str | None = None
        self.publish_events: Callable[[list[KVEvent]], None] = lambda events: None
        """Where each iteration's KV events go (the ZMQ publisher, once the server wires it)."""

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(self._loop_died)

    def _loop_died(self, task: asyncio.Task[None]) -> None:
        """A bug in the loop must not leave clients hanging: fail every request, and /health."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.failure = f"engine loop failed: {exc!r}"
        traceback.print_exception(exc, file=sys.stderr)
        for a in self._active.values():
            a.handle.finish(self.failure)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():  # a dead loop was reported already
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for a in self._active.values():
            for t in a.transfers:
                t.cancel()
            a.handle.finish("server shutting down")
        if self._session is not None:
            await self._session.close()

    # ---- admission ---------------------------------------------------------------------------------
    def submit(self, inp: GenerateInput) -> RequestHandle:
        if self.failure is not None:
            raise RequestError(self.failure, 503)
        if inp.rid in self._active:
            raise RequestError(f"request id {inp.rid!r} is already running", 409)
        mode = admitted_mode(self.cfg, inp, self.rooms, self.sched.capacity)
        prompt_len, out_len = len(inp.input_ids), inp.max_new_tokens
        a, hit = Active.enter(inp, self.radix, self.cfg.page_size, self.retain)
        # Each request is its own scheduler "session", holding exactly its radix hit.
        self.sched.cache.insert(inp.rid, hit)
        rid = inp.rid
        self._active[rid] = a
        if mode is Mode.PD_PREFILL:
            assert inp.bootstrap is not None
            room = self.rooms.get(inp.bootstrap.room)
            room.rid, a.room = rid, inp.bootstrap.room
            self.sched.add_prefill(rid, rid, prompt_len)
        elif mode is Mode.PD_DECODE:
            a.allocated = asyncio.get_running_loop().create_future()
            # The scheduler may admit older waiting transfers along with this one.
            self._allocated(self.sched.add_incoming(rid, rid, prompt_len, out_len))
            a.transfers.append(asyncio.create_task(self._receive_kv(a)))
        else:
            self.sched.add_local(rid, rid, prompt_len, out_len, chunk_len=inp.chunk_len)
        self._poke()
        return a.handle

    async def _receive_kv(self, a: Active) -> None:
        inp = a.handle.inp
        assert inp.bootstrap is not None and a.allocated is not None and self._session is not None
        num_tokens = await a.allocated
        b = inp.bootstrap
        try:
            timeout_s = self.cfg.transfer_timeout_s
            done_at = await fetch_kv(self._session, b.host, b.port, b.room, num_tokens, timeout_s)
            # The KV landed when P's link finished, not when the reply was scheduled here.
            arrived = time.monotonic() - min(max(time.time() - done_at, 0.0), MAX_LAG_S)
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as exc:
            # P failed or went away: free the preallocated KV now instead of decoding into the void.
            self.abort(inp.rid, f"KV transfer failed: {exc}")
            return
        self.sched.kv_arrived(inp.rid)
        self._joining.add(inp.rid)
        self._poke(arrived)

    def kv_sent(self, room_id: int, error: str | None = None) -> None:
        """P: the room's KV crossed the link; free it (the prompt stays in the radix cache)."""
        room = self.rooms.pop(room_id)
        a = self._active.pop(room.rid, None) if room is not None and room.rid is not None else None
        if a is None:
            return
        self.sched.release(a.handle.inp.rid)
        self.radix.unlock(a.locked)
        a.handle.finish(error)
        self._poke()

    def abort(self, rid: str, error: str = "aborted") -> bool:
        """SGLang's abort: the request leaves the scheduler in whatever state it is in, its KV and
        batch slot are free at the next iteration, and its PD room (if any) fails at once, so the
        other side of the hand-off stops waiting for it. False if the request is not here."""
        a = self._active.pop(rid, None)
        if a is None:
            return False
        self.sched.cancel(rid)
        self.sched.cache.discard(rid)  # the hit carrier of a request that was never admitted
        self._decoding.discard(rid)
        self._joining.discard(rid)
        self.radix.unlock(a.locked)
        me = asyncio.current_task()
        for t in a.transfers:
            if t is not me:
                t.cancel()
        room = self.rooms.pop(a.room) if a.room is not None else None
        if room is not None:
            room.failed = error
            room.prefilled.set()  # wakes a decode server waiting on the room, to fail it
        a.handle.finish(error)
        if self.cfg.role is Role.DECODE:
            self._allocated(self.sched.allocate())
        self._poke()
        return True

    def room_gone(self, room_id: int) -> None:
        """P: the decode server waiting on the room went away (aborted, crashed): drop the request."""
        room = self.rooms.peek(room_id)
        if room is not None and room.rid is not None:
            self.abort(room.rid, "the decode server went away before the KV transfer ended")

    def _allocated(self, allocated: tuple[tuple[str, int], ...]) -> None:
        for rid, num_tokens in allocated:
            a = self._active.get(rid)
            if a is not None and a.allocated is not None and not a.allocated.done():
                a.allocated.set_result(num_tokens)

    def abort_all(self) -> None:
        for rid in list(self._active):
            self.abort(rid)

    async def flush_cache(self) -> bool:
        if self._active:
            return False
        self._events.extend(self.radix.clear())
        self._flush_events()
        return True

    # ---- the real-time loop ----------------------------------------------------------------------
    def _poke(self, at: float | None = None) -> None:
        """New work: wake the loop, and remember when the work came (``at``, monotonic; default now),
        so an idle loop starts its first iteration then, as the simulator does, rather than when
        asyncio gets round to it."""
        if not self._wake.is_set():
            self._woken_at = time.monotonic() if at is None else at
            self._wake.set()

    async def _run(self) -> None:
        deadline: float | None = None
        while True:
            # Real time streams every decode step; with no modelled time, leaps over decode-only
            # steps save the CPU that a benchmark of the router in front needs.
            it = self.sched.next_iteration(1 if self.cfg.time_scale > 0 else LEAP_STEPS)
            self._decoding |= self._joining
            self._joining.clear()
            if it is None:
                self._wake.clear()
                await self._wake.wait()
                deadline = self._woken_at
                continue
            now = time.monotonic()
            if deadline is None or deadline < now - MAX_LAG_S:
                deadline = now
            deadline += it.duration_ms / 1000.0 * self.cfg.time_scale
            await asyncio.sleep(max(deadline - now, 0.0))
            self._apply(it, self.sched.complete(it), deadline)
            self.num_iterations += 1

    def _emit(self, rid: str, num_tokens: int = 1) -> None:
        a = self._active.get(rid)
        if a is not None:
            h = a.handle
            n = len(h.output_ids)
            h.emit([tokens.output_token(a.digest, n + i) for i in range(num_tokens)])

    def _apply(self, it: Iteration, out: Outcome, ended_at: float) -> None:
        if it.num_decodes:
            for rid in self._decoding:
                self._emit(rid, it.num_steps)  # a leap ends at the batch's first finish
        finished = set(out.finished)
        for rid in out.first_token:
            if rid not in self._decoding:
                self._emit(rid)  # a prefill on D just finished: its first token
                if rid not in finished:
                    self._joining.add(rid)
        for rid in out.prefill_done:
            self._prefilled(rid, ended_at)
        self._allocated(out.allocated)
        for rid in out.finished:
            self._decoding.discard(rid)
            self._finished(rid)
        self._flush_events()

    def _prefilled(self, rid: str, at: float) -> None:
        a = self._active.get(rid)
        if a is None:
            return
        self._cache(a.chain, a.handle.inp.input_ids)
        self._emit(rid)
        if a.room is not None:
            room = self.rooms.get(a.room)
            room.prefilled_at = at
            room.prefilled.set()
            asyncio.get_running_loop().call_later(
                self.cfg.transfer_timeout_s * max(self.cfg.time_scale, 1.0), self._expire_room, a.room
            )

    def _expire_room(self, room_id: int) -> None:
        """P: no D came for the room's KV in time (e.g. the router's decode request failed)."""
        room = self.rooms.peek(room_id)
        if room is not None and not room.claimed:
            self.kv_sent(room_id, error="no decode server fetched the KV before the bootstrap timeout")

    def _finished(self, rid: str) -> None:
        a = self._active.pop(rid, None)
        if a is None:
            return
        h = a.handle
        if self.retain:
            # SGLang caches the sequence minus the last token, whose KV was never computed.
            seq = h.inp.input_ids + tuple(h.output_ids[:-1])
            self._cache(a.chain.extend(seq), seq)
        self.radix.unlock(a.locked)
        h.finish()

    def _cache(self, chain: PageChain, token_ids: tuple[int, ...]) -> None:
        if self.retain:
            budget = self.sched.capacity - self.sched.active_tokens
            self._events.extend(self.radix.insert(token_ids, chain.hashes, budget))

    def _flush_events(self) -> None:
        if self._events:
            events, self._events = self._events, []
            self.publish_events(events)
