"""A lean pooled HTTP/1.1 client for the data path (``POST /generate`` to the workers).

aiohttp's client costs about 0.2 ms of CPU per request in request/response objects, timers and
tracing hooks; a PD request makes two of them. This client keeps, per worker, a pool of keep-alive
connections (``asyncio.Protocol`` + the C parser of ``httptools``) and does per request: one
``transport.write`` of head + body, the parser callbacks, and the reads the caller asks for. Bodies
(``Content-Length``, chunked, or up to the connection's close) are decoded by the parser; streamed
SSE lines are read with :meth:`Response.readline`; the pool of connections is
:mod:`sglang_ppd.router.upstream_pool`. ``tests/test_upstream_conformance.py`` holds it
to real servers (chunked bodies, keep-alive after error replies, resets mid-body, slow and
oversized replies); it stays on the data path only while that suite passes.

This module is one connection and the reply being read on it. Timeouts are the caller's: each read
takes an absolute ``deadline`` (``loop.time()``) or none. A read that passes it raises
:class:`UpstreamTimeout`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:  # the pool owns its connections: a type only
    from sglang_ppd.router.upstream_pool import Pool

PAUSE_AT_BYTES = 1 << 20
"""Unread reply bytes at which the connection stops reading from its socket (flow control)."""


class UpstreamError(Exception):
    """The connection failed, broke mid-reply, or sent something that is not HTTP."""


class UpstreamConnectError(UpstreamError):
    """The TCP connection could not be made."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """A read passed its deadline."""


class Response(asyncio.Protocol):
    """One connection, and the reply being read on it (the protocol object is reused per request)."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool, self.key = pool, key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.buf = bytearray()
        self.complete = False
        self.headers_done = False
        self.keep_alive = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.got_bytes = False
        self.paused = False
        self.closed = False
        self.framed = False
        """The reply says where its body ends (Content-Length or chunked), not the connection's close."""
        self.leased = False
        self.uses = 0

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad HTTP reply: {exc}"))
            return
        if len(self.buf) > PAUSE_AT_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and exc is None and self.headers_done and not self.framed:
            # A reply with neither Content-Length nor chunked encoding ends where the connection
            # does (RFC 9112 6.3): a clean close completes it (the parser cannot tell it that).
            self.complete = True
            self._wake()
        elif not self.complete:
            self._fail(UpstreamError(f"connection closed by the worker ({exc or 'EOF'})"))
        self.pool._forget(self)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost reports it

    # --- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, _: bytes) -> None:
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful before the body
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.buf += body

    def on_message_complete(self) -> None:
        self.complete = True

    # --- waiting -----------------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """Make the pending (and every later) read raise ``exc``; the connection is dropped."""
        self._fail(exc)
        self.close()

    async def _wait(self, deadline: float | None) -> None:
        if self.exc is not None:
            raise self.exc
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        w = self.waiter = self.loop.create_future()
        timer = None
        if deadline is not None:
            timer = self.loop.call_at(deadline, self._timeout, w)
        try:
            await w
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.exc is not None:
            raise self.exc

    def _timeout(self, w: asyncio.Future[None]) -> None:
        if not w.done():
            w.set_exception(UpstreamTimeout("timed out reading the worker's reply"))

    # --- reading -----------------------------------------------------------------------------------
    async def wait_headers(self, deadline: float | None) -> int:
        while not self.headers_done:
            await self._wait(deadline)
        return self.status

    async def read_all(self, cap: int, deadline: float | None) -> bytes:
        """The whole body; :class:`ValueError` past ``cap`` bytes."""
        while not self.complete:
            if len(self.buf) > cap:
                raise ValueError(f"reply exceeds {cap} bytes")
            await self._wait(deadline)
        if len(self.buf) > cap:
            raise ValueError(f"reply exceeds {cap} bytes")
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def readline(self, deadline: float | None, cap: int) -> bytes:
        """The next line (with its ``\\n``), or what is left at the end (``b""`` when nothing)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if self.complete:
                line = bytes(self.buf)
                self.buf.clear()
                return line
            if len(self.buf) > cap:
                raise ValueError(f"a streamed line exceeds {cap} bytes")
            await self._wait(deadline)

    async def drain(self, deadline: float | None) -> None:
        while not self.complete:
            self.buf.clear()
            await self._wait(deadline)
        self.buf.clear()

    # --- lifecycle ---------------------------------------------------------------------------------
    def release(self) -> None:
        """Back to the pool if the reply was read to its end on a keep-alive connection, else close."""
        if not self.leased:
            return  # released already (a second release must not touch the next request's lease)
        self.leased = False
        if self.complete and self.exc is None and not self.closed and self.keep_alive:
            self.pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.buf.clear()
        self.complete = self.headers_done = self.got_bytes = self.keep_alive = self.framed = False
        self.exc = None
