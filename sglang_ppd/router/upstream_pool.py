"""Keep-alive connections to the workers, per ``host:port``: the data path's HTTP/1.1 client
(:mod:`sglang_ppd.router.upstream` is one connection and its reply).

:meth:`Pool.post` writes head and body in one ``transport.write`` on an idle connection (or a new
one) and waits for the reply's headers. A request written on a reused connection that the worker
had already closed (no byte of reply) is sent once more on a fresh connection, as aiohttp does. A
reply read to its end on a keep-alive connection puts the connection back (at most
``MAX_IDLE_PER_HOST`` idle per worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

from sglang_ppd.router.upstream import Response, UpstreamConnectError, UpstreamError, UpstreamTimeout

MAX_IDLE_PER_HOST = 256


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
