"""The emulated worker's ZMQ publishers: SGLang KV events (PUB + ROUTER replay), SGLang's LoadStat,
and our WorkerTelemetry.

The KV-event publisher mirrors SGLang's ``ZmqEventPublisher``: frames ``[topic, seq, payload]`` with
``seq`` counting batches from 0, a bounded replay buffer, and a ROUTER socket that answers
``[identity, b"", start_seq]`` with every buffered batch ``>= start_seq`` and then an end marker.
PUB sends never block (ZMQ drops at the high-water mark, as in SGLang), so they are synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import zmq
import zmq.asyncio

from sglang_ppd.protocol import kv_events, load_stat, telemetry


def bound_port(socket: zmq.Socket) -> int:
    """The TCP port a socket bound to (resolves ``tcp://*:*`` ephemeral binds)."""
    endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    return int(endpoint.rsplit(":", 1)[1])


def _pub(ctx: zmq.asyncio.Context, endpoint: str, hwm: int) -> tuple[zmq.Socket, int]:
    sock: zmq.Socket = zmq.Context.shadow(ctx.underlying).socket(zmq.PUB)
    sock.set_hwm(hwm)
    sock.bind(endpoint)
    return sock, bound_port(sock)


class KvEventPublisher:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        replay_endpoint: str | None,
        topic: str = "",
        buffer_steps: int = 10_000,
    ) -> None:
        self._pub, self.port = _pub(ctx, endpoint, 100_000)
        self._replay: zmq.asyncio.Socket | None = None
        self.replay_port: int | None = None
        if replay_endpoint is not None:
            self._replay = ctx.socket(zmq.ROUTER)
            self._replay.bind(replay_endpoint)
            self.replay_port = bound_port(self._replay)
        self.topic = topic
        self.seq = 0
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._replay is not None:
            self._task = asyncio.create_task(self._serve_replay())

    def publish(self, events: list[kv_events.KVEvent]) -> None:
        batch = kv_events.KVEventBatch(ts=time.time(), events=events, attn_dp_rank=0)
        frames = kv_events.encode_message(self.topic, self.seq, batch)
        self._buffer.append((self.seq, frames[2]))
        self.seq += 1
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart(frames, flags=zmq.NOBLOCK)

    async def _serve_replay(self) -> None:
        assert self._replay is not None
        end = kv_events.seq_to_bytes(kv_events.END_SEQ)
        while True:
            frames = await self._replay.recv_multipart()
            if len(frames) != 3:
                continue
            client_id, _, start_raw = frames
            start = int.from_bytes(start_raw, "big", signed=True)
            for seq, payload in list(self._buffer):
                if seq >= start:
                    await self._replay.send_multipart([client_id, b"", kv_events.seq_to_bytes(seq), payload])
            await self._replay.send_multipart([client_id, b"", end, b""])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)


class LoadPublisher:
    """SGLang's ``LoadStat`` gauge (``--load-publish-endpoint``) and our ``WorkerTelemetry``, each on
    its own PUB socket."""

    def __init__(self, ctx: zmq.asyncio.Context, load_endpoint: str, telemetry_endpoint: str) -> None:
        self._load, self.load_port = _pub(ctx, load_endpoint, 1000)
        self._telemetry, self.telemetry_port = _pub(ctx, telemetry_endpoint, 1000)
        self._load_seq = 0

    def publish(self, stat: load_stat.LoadStat, snapshot: telemetry.WorkerTelemetry) -> None:
        with contextlib.suppress(zmq.Again):
            self._load.send_multipart(load_stat.encode_message(self._load_seq, stat), flags=zmq.NOBLOCK)
            self._telemetry.send_multipart(telemetry.encode(snapshot), flags=zmq.NOBLOCK)
        self._load_seq += 1

    def close(self) -> None:
        self._load.close(linger=0)
        self._telemetry.close(linger=0)
