"""Conformance of the router's httptools upstream client (``router/upstream.py``,
``router/upstream_pool.py``) against real HTTP servers: aiohttp's server for chunked bodies,
keep-alive reuse after error replies, resets mid-body, slow and oversized replies; and a raw asyncio
server for what aiohttp never sends (a body delimited by the connection's close, a reply split byte
by byte, a garbage status line).

The client keeps its place on the data path only while this suite passes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from test_router_support import serve_loopback

from sglang_ppd.router.upstream import Response, UpstreamError, UpstreamTimeout
from sglang_ppd.router.upstream_pool import Pool

pytestmark = pytest.mark.timeout(30)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def served() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``await served(handler)``: an aiohttp server answering POST /generate; its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/generate", handler)
        runner, url = await serve_loopback(app)
        runners.append(runner)
        return url

    yield serve
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def raw_served() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """``await raw_served(reply)``: a TCP server that reads one request head and writes ``reply``
    bytes one at a time, then closes; its base URL."""
    servers: list[asyncio.Server] = []

    async def serve(reply: bytes) -> str:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            for i in range(len(reply)):
                writer.write(reply[i : i + 1])
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield serve
    for s in servers:
        s.close()


def _deadline(s: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + s


async def _lines(resp: Response) -> list[bytes]:
    out = []
    while line := await resp.readline(_deadline(), 1 << 20):
        out.append(line)
    return out


async def test_chunked_bodies_split_anywhere_read_whole_and_by_line(
    served: Callable[..., Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b'data: {"a"', b": 1}\n\ndata: 2\n", b"\ndata: [DONE]\n\n"):
            await resp.write(piece)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    url = await served(handler)
    pool = Pool(1.0)
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert r.status == 200
    assert [x for x in await _lines(r) if x.strip()] == [b'data: {"a": 1}\n', b"data: 2\n", b"data: [DONE]\n"]
    r.release()
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert await r.read_all(1 << 20, _deadline()) == b'data: {"a": 1}\n\ndata: 2\n\ndata: [DONE]\n\n'
    assert r.uses == 2  # the same connection, reused
    r.release()
    pool.close()


@pytest.mark.parametrize("status", [400, 500, 503])
async def test_keep_alive_reuse_after_error_replies(
    served: Callable[..., Awaitable[str]], status: int
) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        if body == b"fail":
            return web.json_response({"error": "no"}, status=status)
        return web.json_response({"ok": True})

    url = await served(handler)
    pool = Pool(1.0)
    r = await pool.post(url, "/generate", b"fail", _deadline())
    assert r.status == status and b"error" in await r.read_all(1 << 20, _deadline())
    r.release()
    r = await pool.post(url, "/generate", b"ok", _deadline())
    assert r.status == 200 and await r.read_all(1 << 20, _deadline()) == b'{"ok": true}'
    r.release()
    assert len(peers) == 2 and peers[0] == peers[1]  # one connection for both
    pool.close()


@pytest.mark.parametrize("chunked", [True, False])
async def test_a_reset_mid_body_is_an_error_and_the_connection_is_not_reused(
    served: Callable[..., Awaitable[str]], chunked: bool
) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        await request.read()
        if calls > 1:
            return web.json_response({"ok": True})
        resp = web.StreamResponse() if chunked else web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"data: partial\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()  # RST, mid-body
        return resp

    url = await served(handler)
    pool = Pool(1.0)
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert await r.readline(_deadline(), 1 << 20) == b"data: partial\n"
    with pytest.raises(UpstreamError):
        await _lines(r)
    r.release()
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert r.uses == 1 and await r.read_all(1 << 20, _deadline()) == b'{"ok": true}'
    r.release()
    pool.close()


async def test_slow_headers_and_slow_chunks_hit_the_deadline(served: Callable[..., Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if body == b"slow-head":
            await asyncio.sleep(2)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await asyncio.sleep(2)
        await resp.write(b"data: 2\n\n")
        return resp

    url = await served(handler)
    pool = Pool(1.0)
    with pytest.raises(UpstreamTimeout):
        await pool.post(url, "/generate", b"slow-head", _deadline(0.2))
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert await r.readline(_deadline(), 1 << 20) == b"data: 1\n"
    await r.readline(_deadline(), 1 << 20)  # the blank line after it
    with pytest.raises(UpstreamTimeout):
        await r.readline(_deadline(0.2), 1 << 20)
    r.release()
    assert not pool._idle.get(r.key)  # a reply not read to its end never goes back to the pool
    pool.close()


async def test_oversized_replies_are_refused_within_the_cap(served: Callable[..., Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if body == b"line":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b"x" * 65536)  # 4 MiB without a newline
            return resp
        return web.Response(body=b"y" * (3 << 20))

    url = await served(handler)
    pool = Pool(1.0)
    r = await pool.post(url, "/generate", b"whole", _deadline())
    with pytest.raises(ValueError):
        await r.read_all(1 << 20, _deadline())
    r.release()
    r = await pool.post(url, "/generate", b"line", _deadline())
    with pytest.raises(ValueError):
        await r.readline(_deadline(), 1 << 20)
    assert len(r.buf) < 4 << 20  # flow control stopped reading long before the whole reply
    r.release()
    pool.close()


async def test_a_body_delimited_by_close_and_a_reply_split_byte_by_byte(
    raw_served: Callable[[bytes], Awaitable[str]],
) -> None:
    pool = Pool(1.0)
    url = await raw_served(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n"
    )
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert [x for x in await _lines(r) if x.strip()] == [b"data: 1\n", b"data: 2\n"]
    r.release()
    url = await raw_served(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    r = await pool.post(url, "/generate", b"{}", _deadline())
    assert await r.read_all(100, _deadline()) == b"hello"
    r.release()
    pool.close()


async def test_a_reply_that_is_not_http_is_an_error(raw_served: Callable[[bytes], Awaitable[str]]) -> None:
    pool = Pool(1.0)
    url = await raw_served(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(UpstreamError):
        await pool.post(url, "/generate", b"{}", _deadline())
    pool.close()
