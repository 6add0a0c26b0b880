"""The router's listening socket and what it tolerates from clients before a handler runs.

- **Connection cap**: past ``max_connections`` open client connections (bounded further by the
  process's file-handle limit), a new connection gets ``503`` with ``Retry-After`` and is closed at
  once, so idle connections can never use up the file handles every request needs.
- **Header timeout**: a connection must deliver its request headers within ``header_timeout_s`` of
  opening (or of its previous reply); aiohttp's keep-alive timer enforces it, partial headers
  included.
- **Body timeout**: handlers read the body within ``body_timeout_s`` (:func:`read_body`), *before*
  they take an in-flight slot, so slow uploads hold no slot (408 past it).
- **Slow readers**: a client that takes none of its reply for ``write_timeout_s`` is cut
  (:class:`SlowReaderGuard`; counted ``slow_reader``): a stream's upstream request is aborted, and a
  whole reply is written by :func:`send_whole` in the handler, under the guard, rather than by
  aiohttp after it (which has no write timeout: a client that never reads would hold its connection
  and the reply's memory for good).
- **Malformed HTTP** is one debug line, not an ERROR with a traceback per bad request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import MutableMapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sglang_ppd.router.metrics import RouterMetrics
from sglang_ppd.router.requests import BadRequest

log = logging.getLogger(__name__)
WRITE_PIECE_BYTES = 256 * 1024
"""A whole reply is written in pieces this large, so that a client reading it slowly (but reading)
shows progress between them."""
RESERVED_FDS = 256
"""File handles kept for upstream connections, ZMQ sockets and logs when capping client connections."""
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: 77\r\n\r\n"
    b'{"error":{"message":"too many connections","type":"server_error","code":503}}'
)


class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, with malformed requests as one debug line (they are the client's
    problem, and an attacker could otherwise fill the log with tracebacks)."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            first = (exc_info.message or type(exc_info).__name__).strip().splitlines()[0]
            self.logger.debug("malformed HTTP request: %s", first[:200])
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kw)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


def connection_cap(configured: int) -> int:
    """``configured``, lowered to what the process's file-handle limit leaves for clients."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_FDS))


class CappedSite(web.TCPSite):
    """A TCP site that refuses connections past ``cap`` (counted in ``rejected["connections"]``)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        cap: int,
        metrics: RouterMetrics,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, host, port, backlog=4096, reuse_port=reuse_port)
        self.cap, self.metrics = cap, metrics

    async def start(self) -> None:
        server = self._runner.server
        assert isinstance(server, web.Server)
        open_conns = server._connections  # aiohttp's own registry of live connections

        def factory() -> asyncio.Protocol:
            if len(open_conns) >= self.cap:
                self.metrics.rejected["connections"] += 1
                return _Refused()
            return server()

        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )

    def bound_port(self) -> int:
        server: Any = self._server  # asyncio's or uvloop's Server: both have ``sockets``
        return int(server.sockets[0].getsockname()[1])


class SlowReaderGuard:
    """Cuts a client that takes none of its reply for ``timeout_s``: its connection is aborted (the
    pending write then raises, and a stream's handler aborts upstream) and the cut is counted in
    ``rejected["slow_reader"]``. One timer per reply, re-armed every ``timeout_s``; a write costs
    only a stamp (:meth:`progressed`) after it returns. A client is stuck when reply bytes wait in
    its connection and no write has returned since."""

    def __init__(self, request: web.Request, timeout_s: float, metrics: RouterMetrics) -> None:
        self.transport, self.timeout_s, self.metrics = request.transport, timeout_s, metrics
        self.loop = asyncio.get_running_loop()
        self.progress_s = self.loop.time()
        self._timer = self.loop.call_later(timeout_s, self._check)

    def progressed(self) -> None:
        self.progress_s = self.loop.time()

    def _check(self) -> None:
        idle_s = self.loop.time() - self.progress_s
        transport = self.transport
        if transport is not None and idle_s >= self.timeout_s and transport.get_write_buffer_size() > 0:
            self.metrics.rejected["slow_reader"] += 1
            transport.abort()
            return
        self._timer = self.loop.call_later(max(self.timeout_s - idle_s, 0.05), self._check)

    def close(self) -> None:
        self._timer.cancel()


async def send_whole(
    request: web.Request, resp: web.Response, timeout_s: float, metrics: RouterMetrics
) -> web.StreamResponse:
    """Write a handler's whole reply now, in pieces of ``WRITE_PIECE_BYTES`` under a
    :class:`SlowReaderGuard`, and return it sent. Raises ``ConnectionError`` when the client is cut
    or gone. A reply already sent, or with a body that is not bytes, is returned as it is."""
    body = resp.body
    if resp.prepared or not isinstance(body, bytes | bytearray):
        return resp
    out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=resp.headers)
    out.content_length = len(body)
    if resp.keep_alive is False:
        out.force_close()
    guard = SlowReaderGuard(request, timeout_s, metrics)
    try:
        await out.prepare(request)
        view = memoryview(body)
        for start in range(0, len(view), WRITE_PIECE_BYTES):
            # Past aiohttp's 64 KiB mark each write waits for the client to take it: a returned
            # write is progress.
            await out.write(view[start : start + WRITE_PIECE_BYTES])
            guard.progressed()
        await out.write_eof()
    finally:
        guard.close()
    return out


async def read_body(request: web.Request, timeout_s: float, max_bytes: int) -> bytes:
    """The whole body within ``timeout_s`` (408) and ``max_bytes`` (the app's ``client_max_size``: 413)."""
    try:
        if request.content.is_eof():  # the usual case: the body came with the headers, no timer needed
            return await request.read()
        return await asyncio.wait_for(request.read(), timeout_s)
    except asyncio.TimeoutError:
        raise BadRequest(f"request body not received within {timeout_s:g} s", status=408) from None
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"request body exceeds {max_bytes} bytes", status=413) from None
