"""PD bootstrap between an emulated P and D, keyed by ``bootstrap_room``, and the emulated KV link.

SGLang's D connects to the bootstrap server of the P named in the request (``bootstrap_host`` /
``bootstrap_port``), registers the room with the KV it still needs, and P pushes that KV after the
prefill. Here the bootstrap port serves one long-poll HTTP call: D posts ``{room, num_tokens}``; P
answers once the room's prefill is done and the KV has crossed the link. The link is P's NIC: a FIFO
of transfers at ``bandwidth`` bytes/s, priced by the cost model's ``transfer_ms``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from sglang_ppd.core.costmodel import CostProfile

TRANSFER_PATH = "/ppd_emu/kv_transfer"
MAX_LAG_S = 0.05
"""How far the modelled timeline (the engine's deadline clock, a transfer's end) may run behind real
time before it is reset to now: catching up compresses later steps, so it is bounded (GC pauses,
a busy host)."""


class Link:
    """One outgoing KV link: transfers queue behind each other."""

    def __init__(self, profile: CostProfile, bandwidth_bytes_per_s: float, time_scale: float) -> None:
        self.profile = profile
        self.bandwidth = bandwidth_bytes_per_s
        self.time_scale = time_scale
        self._busy_until = 0.0
        self.bytes_sent = 0

    def queued_bytes(self) -> int:
        left_s = max(self._busy_until - time.monotonic(), 0.0)
        return int(left_s * self.bandwidth / self.time_scale) if self.time_scale > 0 else 0

    async def transfer(self, num_tokens: int, ready_at: float) -> tuple[float, float]:
        """Move ``num_tokens`` of KV that was ready at ``ready_at`` (monotonic clock): it starts then,
        or when the link frees up. Returns the modelled transfer time (ms, queueing excluded) and the
        wall-clock (``time.time()``) instant it ended."""
        ms = self.profile.transfer_ms(num_tokens, self.bandwidth)
        now = time.monotonic()
        start = max(min(ready_at, now), now - MAX_LAG_S, self._busy_until)
        self._busy_until = start + ms / 1000.0 * self.time_scale
        self.bytes_sent += num_tokens * self.profile.kv_bytes_per_token
        await asyncio.sleep(max(self._busy_until - now, 0.0))
        return ms, time.time() - (time.monotonic() - self._busy_until)


@dataclass(slots=True)
class Room:
    """P's side of one room: set when the prefill is done and the KV may be sent."""

    prefilled: asyncio.Event = field(default_factory=asyncio.Event)
    prefilled_at: float = 0.0
    """When the prefill's last iteration ended on the engine's deadline clock (monotonic)."""
    rid: str | None = None
    claimed: bool = False
    failed: str | None = None
    """Why P gave the room up (its request was aborted); set along with ``prefilled``."""


class Rooms:
    def __init__(self) -> None:
        self._rooms: dict[int, Room] = {}

    def get(self, room: int) -> Room:
        return self._rooms.setdefault(room, Room())

    def peek(self, room: int) -> Room | None:
        return self._rooms.get(room)

    def pop(self, room: int) -> Room | None:
        return self._rooms.pop(room, None)


class TransferHandler:
    """P's bootstrap server. ``on_sent(room)`` frees the KV once it has crossed the link;
    ``on_gone(room)`` drops the room's request when D hangs up first (needs the app served with
    ``handler_cancellation=True``, so that a closed connection cancels the handler)."""

    def __init__(
        self,
        rooms: Rooms,
        link: Link,
        on_sent: Callable[[int], None],
        wait_timeout_s: float,
        on_gone: Callable[[int], None] = lambda room: None,
    ) -> None:
        self.rooms = rooms
        self.link = link
        self.on_sent = on_sent
        self.on_gone = on_gone
        self.wait_timeout_s = wait_timeout_s

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            room_id, num_tokens = int(body["room"]), int(body["num_tokens"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return web.json_response({"error": "need {room: int, num_tokens: int}"}, status=400)
        room = self.rooms.get(room_id)
        if room.claimed:
            return web.json_response({"error": f"room {room_id} is already bootstrapped"}, status=409)
        room.claimed = True
        try:
            await asyncio.wait_for(room.prefilled.wait(), self.wait_timeout_s)
            if room.failed is None:
                ms, done_at = await self.link.transfer(num_tokens, room.prefilled_at)
        except asyncio.TimeoutError:
            self.rooms.pop(room_id)
            return web.json_response({"error": f"room {room_id}: no prefill arrived"}, status=504)
        except asyncio.CancelledError:
            self.on_gone(room_id)
            raise
        if room.failed is not None:
            return web.json_response({"error": f"room {room_id}: {room.failed}"}, status=410)
        self.on_sent(room_id)
        body_out = {"room": room_id, "num_tokens": num_tokens, "transfer_ms": ms, "done_at": done_at}
        return web.json_response(body_out)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TRANSFER_PATH, self.handle)
        return app


async def fetch_kv(
    session: aiohttp.ClientSession, host: str, port: int, room: int, num_tokens: int, timeout_s: float
) -> float:
    """D's side: register the room with P and wait for the KV. Returns the wall-clock instant the
    transfer ended on P's link (a little before the reply got here)."""
    url = f"http://{host}:{port}{TRANSFER_PATH}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(url, json={"room": room, "num_tokens": num_tokens}, timeout=timeout) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"bootstrap {host}:{port} room {room}: {body.get('error', resp.status)}")
        return float(body["done_at"])
