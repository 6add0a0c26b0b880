"""A client that hangs up mid-stream is routine (a user's Ctrl-C, a load generator stopping): one
debug line in the router's log, not an aiohttp traceback at ERROR per request."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from test_router_support import FakeWorker, ScriptedPolicy, start_router, wait_for

from sglang_ppd.core.types import RouteKind


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/generate", "/v1/completions"])
async def test_a_client_hanging_up_mid_stream_logs_one_debug_line(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    d = await FakeWorker("decode", server_info={"ppd_local_prefill": True}).start()
    d.chunk_delay_s = 0.0  # the router writes without pause, so a write meets the closing socket
    policy = ScriptedPolicy()
    policy.force = RouteKind.LOCAL
    router, runner, url = await start_router([d], policy=policy)
    caplog.set_level(logging.DEBUG)
    try:
        w = router.registry.get(d.url)
        assert w is not None
        await wait_for(lambda: w.supports_local_prefill)
        body = {"text": "abc", "sampling_params": {"max_new_tokens": 4000}, "stream": True}
        if path != "/generate":
            body = {"model": router.model_name, "prompt": "abc", "max_tokens": 4000, "stream": True}
        async with aiohttp.ClientSession() as s:
            resp = await s.post(f"{url}{path}", json=body)
            await resp.content.readline()  # the stream has begun
            resp.close()  # hang up
        await wait_for(lambda: router.metrics.client_aborts == 1)
        await asyncio.sleep(0.3)  # the next chunks meet the closed connection
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not loud, [(r.name, r.getMessage()) for r in loud]
        ours = [r for r in caplog.records if r.name.startswith("sglang_ppd") and "went away" in r.message]
        assert len(ours) == 1 and ours[0].levelno == logging.DEBUG
    finally:
        await runner.cleanup()
        await d.stop()
