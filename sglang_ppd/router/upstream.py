"""A lean pooled HTTP/1.1 client for the data path (``POST /generate`` to the workers).

aiohttp's client costs about 0.2 ms of CPU per request in request/response objects, timers and
tracing hooks; a PD request makes two of them. This client keeps, per worker, a pool of keep-alive
connections (``asyncio.Protocol`` + the C parser of ``httptools``) and does per request: one
``transport.write`` of head + body, the parser callbacks, and the reads the caller asks for. Bodies
(``Content-Length``, chunked, or up to the connection's close) are decoded by the parser; streamed
SSE lines are read with :meth:`Response.readline`. ``tests/test_upstream_conformance.py`` holds it
to real servers (chunked bodies, keep-alive after error replies, resets mid-body, slow and
oversized replies); it stays on the data path only while that suite passes.

Timeouts are the caller's: each read takes an absolute ``deadline`` (``loop.time()``) or none. A read
that passes it raises :class:`UpstreamTimeout`. A request written on a reused connection that the
worker had already closed (no byte of reply) is sent once more on a fresh connection, as aiohttp
does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

MAX_IDLE_PER_HOST = 256
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


class Pool:
    """Keep-alive connections per ``host:port``, opened on demand, never limited in number."""

    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[tuple[str, int], list[Response]] = {}
        self._heads: dict[tuple[str, str], tuple[tuple[str, int], bytes]] = {}
        self._closed = False

    def _head(self, url: str, path: str) -> tuple[tuple[str, int], bytes]:
        cached = self._heads.get((url, path))
        if cached is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or parts.hostname is None:
                raise UpstreamConnectError(f"only http:// workers are supported, not {url}")
            key = (parts.hostname, parts.port or 80)
            netloc = parts.netloc.rsplit("@", 1)[-1]
            head = f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\n"
            cached = self._heads[(url, path)] = (key, head.encode("latin-1"))
            if len(self._heads) > 4096:
                self._heads.clear()
        return cached

    async def _connect(self, key: tuple[str, int]) -> Response:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Response(self, key), key[0], key[1]), self.connect_timeout_s
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc!r}") from None
        return proto

    async def post(
        self,
        url: str,
        path: str,
        body: bytes,
        deadline: float | None,
        attach: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send the request and wait for the reply's status line and headers. ``attach`` sees the
        connection as soon as the request is written (to cut it with :meth:`Response.set_exception`)."""
        key, head = self._head(url, path)
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        for _ in range(2):
            idle = self._idle.get(key)
            conn = None
            while idle:
                c = idle.pop()
                if not c.closed and not c.got_bytes:  # bytes while idle: not a clean connection
                    conn = c
                    break
                c.close()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            conn.uses += 1
            conn.leased = True
            assert conn.transport is not None
            conn.transport.write(data)
            if attach is not None:
                attach(conn)
            try:
                await conn.wait_headers(deadline)
            except UpstreamTimeout:
                conn.close()
                raise
            except UpstreamError:
                conn.close()
                if reused and not conn.got_bytes:
                    continue  # the worker had closed the idle connection: once more, fresh
                raise
            except BaseException:  # cancelled, or cut by the caller: the reply will never be read
                conn.close()
                raise
            return conn
        raise UpstreamError(f"{url} closed two connections before replying")

    def _put(self, conn: Response) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn._reset()
        idle.append(conn)

    def _forget(self, conn: Response) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
