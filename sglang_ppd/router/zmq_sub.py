"""A bounded ZMQ SUB socket that survives a peer's protocol errors.

libzmq (4.3) cuts a connection whose peer sends a message over ``ZMQ_MAXMSGSIZE`` and, since that is
a protocol error, never reconnects it: one oversized (or garbage-framed) message would silence a
worker's telemetry for good. This wrapper watches the socket's monitor; on a disconnect it counts a
reset and, after ``RESET_BACKOFF_S``, replaces the socket with a fresh one on the same endpoint. A
publisher that keeps misbehaving costs one reconnect per backoff, never an unbounded loop or buffer.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)
RCV_HWM = 10_000
RESET_BACKOFF_S = 0.2


def new_sub(ctx: zmq.asyncio.Context, topic: bytes, max_bytes: int) -> zmq.asyncio.Socket:
    """A bounded SUB socket, not yet connected."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, RCV_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


class ResilientSub:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        topic: bytes,
        max_bytes: int,
        on_reset: Callable[[], None] = lambda: None,
        on_joined: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``on_reset`` runs when the subscription is cut; ``on_joined`` each time its connection to
        the publisher completes the ZMTP handshake (the subscription goes out right then), before
        the next message is read: the moment to ask for what was published before."""
        self.ctx, self.endpoint, self.topic, self.max_bytes = ctx, endpoint, topic, max_bytes
        self.on_reset, self.on_joined = on_reset, on_joined
        self._open()

    def _open(self) -> None:
        self.sock = new_sub(self.ctx, self.topic, self.max_bytes)
        events = zmq.EVENT_DISCONNECTED | (zmq.EVENT_HANDSHAKE_SUCCEEDED if self.on_joined else 0)
        self.monitor = self.sock.get_monitor_socket(events)
        self.sock.connect(self.endpoint)  # after the monitor: no event of this connection is missed
        self.poller = zmq.asyncio.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    async def recv_multipart(self) -> list[bytes]:
        while True:
            ready = dict(await self.poller.poll())
            if self.sock in ready:
                frames: list[bytes] = await self.sock.recv_multipart()
                return frames
            if self.monitor in ready:
                event = await self.monitor.recv_multipart()
                (kind,) = struct.unpack("=H", event[0][:2])
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and self.on_joined is not None:
                    await self.on_joined()
                elif kind == zmq.EVENT_DISCONNECTED:
                    log.warning(
                        "subscription to %s was cut (oversized or malformed message, or the "
                        "publisher went away); reopening it",
                        self.endpoint,
                    )
                    self.on_reset()
                    self.close()
                    await asyncio.sleep(RESET_BACKOFF_S)
                    self._open()

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
