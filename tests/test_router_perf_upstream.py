"""The router's lean upstream HTTP client (sglang_ppd.router.upstream): keep-alive reuse, a stale
pooled connection resent once, chunked streams read by line, caps, deadlines and single release;
and the first-token deadline that scales with the prompt and the prefill queue."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from test_router_support import serve_loopback

from sglang_ppd.core.observe import Sample
from sglang_ppd.core.types import Route, RouteKind
from sglang_ppd.router.attempt import first_token_timeout_s
from sglang_ppd.router.upstream import UpstreamConnectError, UpstreamTimeout
from sglang_ppd.router.upstream_pool import Pool

pytestmark = pytest.mark.timeout(30)


async def _server(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/generate", handler)
    return await serve_loopback(app, keepalive_timeout=0.3)


@pytest.mark.slow
async def test_reuse_stream_stale_connection_and_release_once() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.query.get("slow"):
            await asyncio.sleep(5)
        if b"stream" not in body:
            return web.json_response({"echo": body.decode()})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        return resp

    runner, url = await _server(handler)
    pool = Pool(connect_timeout_s=2.0)
    try:
        r = await pool.post(url, "/generate", b"abc", None)
        assert r.status == 200 and await r.read_all(1000, None) == b'{"echo": "abc"}'
        r.release()
        r.release()  # a second release is a no-op
        r2 = await pool.post(url, "/generate", b"stream", None)
        assert r2 is r and r2.uses == 2  # the same keep-alive connection
        lines = []
        while line := await r2.readline(None, 1000):
            lines.append(line)
        assert lines == [b"data: 0\n", b"\n", b"data: 1\n", b"\n", b"data: 2\n", b"\n"]
        r2.release()
        await asyncio.sleep(0.8)  # the server's keep-alive timeout closes the idle connection
        r3 = await pool.post(url, "/generate", b"x", None)
        assert r3.status == 200 and await r3.read_all(1000, None) == b'{"echo": "x"}'
        r3.release()
        r4 = await pool.post(url, "/generate", b"y" * 2000, None)
        with pytest.raises(ValueError):
            await r4.read_all(100, None)
        r4.release()  # not read to its end: closed, not pooled
        loop = asyncio.get_running_loop()
        with pytest.raises(UpstreamTimeout):
            await pool.post(url, "/generate?slow=1", b"z", loop.time() + 0.2)
    finally:
        pool.close()
        await runner.cleanup()


async def test_connect_error() -> None:
    pool = Pool(connect_timeout_s=1.0)
    with pytest.raises(UpstreamConnectError):
        await pool.post("http://127.0.0.1:1", "/generate", b"", None)
    with pytest.raises(UpstreamConnectError):
        await pool.post("https://127.0.0.1:1", "/generate", b"", None)


def test_first_token_timeout_scales_with_prompt_and_queue() -> None:
    cfg = SimpleNamespace(
        first_token_timeout_s=600.0, first_token_timeout_per_ktok_s=2.0, request_timeout_s=3600
    )
    p = SimpleNamespace(sample=Sample(queued_prefill_tokens=50_000))
    d = SimpleNamespace(sample=None)
    workers = {"p": p, "d": d}
    router = SimpleNamespace(cfg=cfg, registry=SimpleNamespace(get=workers.get))
    prep = SimpleNamespace(input_ids=[0] * 100_000)
    pd = Route(RouteKind.PD, "d", prefill_worker="p")
    local = Route(RouteKind.LOCAL, "d")
    assert first_token_timeout_s(router, prep, pd) == pytest.approx(600 + 2 * 150)  # type: ignore[arg-type]
    assert first_token_timeout_s(router, prep, local) == pytest.approx(600 + 2 * 100)  # type: ignore[arg-type]
    p.sample = Sample(
        queued_prefill_tokens=1 << 40
    )  # a worker's claim never stretches it past the request timeout
    assert first_token_timeout_s(router, prep, pd) == 3600  # type: ignore[arg-type]
