"""Aborted requests free their KV and batch slot in the emulated worker, as SGLang's abort does:
via /abort_request, a client hanging up (streaming or not), and a PD hand-off whose other side failed
or went away. Real subprocesses on loopback; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from sglang_ppd.emulator.cli import MIN_PUBLISH_PERIOD_S, publish_period_s

pytestmark = pytest.mark.timeout(60)
LONG = 200_000
"""Output tokens: minutes of real-time decoding, so only an abort can end the request in a test."""
SETTLE_S = 10.0


@pytest.fixture(scope="module")
def pd_pair(emulated_worker):
    # A slow-motion P, so a prefill is still running when the test aborts it or its decode side.
    p = emulated_worker("prefill", time_scale=30.0)
    d = emulated_worker("decode", "--ppd", "--kv-capacity-tokens", str(2 * LONG), time_scale=1.0)
    return p, d


async def load(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/loads") as r:
        body: dict[str, Any] = await r.json()
        return body["loads"][0]  # type: ignore[no-any-return]


async def eventually(url: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /v1/loads until ``pred`` holds; fail after SETTLE_S (a bound, not a timing claim)."""
    for _ in range(int(SETTLE_S / 0.02)):
        got = await load(url)
        if pred(got):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url}: load never settled: {got}")


def idle(x: dict[str, Any]) -> bool:
    return x["num_used_tokens"] == 0 and x["num_running_reqs"] == 0 and x["num_waiting_reqs"] == 0


def busy(x: dict[str, Any]) -> bool:
    return x["num_used_tokens"] > 0


def queued(x: dict[str, Any]) -> bool:
    """Waiting or admitted (P finishes an iteration in flight before it admits the next request)."""
    return x["num_used_tokens"] > 0 or x["num_waiting_reqs"] > 0


async def abort(url: str, rid: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/abort_request", json={"rid": rid}) as r:
        assert r.status == 200


def local_body(rid: str) -> dict[str, Any]:
    return {"input_ids": list(range(10, 50)), "rid": rid, "do_local_prefill": True,
            "sampling_params": {"max_new_tokens": LONG}}


def pd_body(p, rid: str, room: int) -> dict[str, Any]:
    return {"input_ids": list(range(1000, 3000)), "rid": rid, "sampling_params": {"max_new_tokens": LONG},
            "bootstrap_host": "127.0.0.1", "bootstrap_port": p.bootstrap_port, "bootstrap_room": room}


async def stream_until(url: str, body: dict[str, Any], act: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Stream ``body``; after the first chunk run ``act``; return the last JSON chunk."""
    last: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s, s.post(f"{url}/generate", json={**body, "stream": True}) as r:
        async for line in r.content:
            if line.startswith(b"data: {"):
                if not last:
                    await act()
                last = orjson.loads(line[len(b"data: ") :])
    return last


@pytest.mark.slow
async def test_abort_request_frees_the_kv_of_a_decoding_request(pd_pair):
    _, d = pd_pair
    await eventually(d.url, idle)

    async def running_then_abort() -> None:
        got = await eventually(d.url, busy)
        assert got["num_running_reqs"] == 1 and got["num_used_tokens"] == 40 + LONG
        await abort(d.url, "local-abort")

    last = await stream_until(d.url, local_body("local-abort"), running_then_abort)
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    await eventually(d.url, idle)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_hangs_up_frees_the_kv(pd_pair, stream: bool):
    _, d = pd_pair
    await eventually(d.url, idle)
    body = {**local_body(f"hangup-{stream}"), "stream": stream}
    async with aiohttp.ClientSession() as s:
        req = asyncio.ensure_future(s.post(f"{d.url}/generate", json=body))
        await eventually(d.url, busy)
        req.cancel()  # closes the connection mid-request
        with contextlib.suppress(asyncio.CancelledError):
            await req
    await eventually(d.url, idle)


@pytest.mark.slow
async def test_decode_waiting_for_kv_frees_its_prealloc_when_prefill_fails(pd_pair):
    p, d = pd_pair
    await eventually(d.url, idle)

    async def abort_on_p() -> None:
        await abort(p.url, "p-fails")

    async with aiohttp.ClientSession() as s:
        p_req = asyncio.ensure_future(s.post(f"{p.url}/generate", json=pd_body(p, "p-fails", 71)))
        d_req = asyncio.ensure_future(s.post(f"{d.url}/generate", json=pd_body(p, "d-waits", 71)))
        got = await eventually(d.url, busy)  # preallocated, waiting for P's KV
        assert got["num_used_tokens"] == 2000 + LONG and got["num_running_reqs"] == 0
        await eventually(p.url, queued)  # P prefills in slow motion
        await abort_on_p()
        p_resp, d_resp = await asyncio.gather(p_req, d_req)
        assert p_resp.status == 500 and d_resp.status == 500
        assert "KV transfer failed" in (await d_resp.json())["error"]["message"]
    await eventually(d.url, idle)
    await eventually(p.url, idle)


async def test_prefill_drops_the_room_when_the_decode_side_goes_away(pd_pair):
    p, d = pd_pair
    await eventually(p.url, idle)
    async with aiohttp.ClientSession() as s:
        p_req = asyncio.ensure_future(s.post(f"{p.url}/generate", json=pd_body(p, "p-left", 72)))
        d_req = asyncio.ensure_future(s.post(f"{d.url}/generate", json=pd_body(p, "d-leaves", 72)))
        await eventually(d.url, busy)
        await eventually(p.url, queued)
        await abort(d.url, "d-leaves")  # D hangs up on the room: P must not prefill for nobody
        p_resp, d_resp = await asyncio.gather(p_req, d_req)
        assert d_resp.status == 500 and p_resp.status == 500
        assert "decode server went away" in (await p_resp.json())["error"]["message"]
    await eventually(p.url, idle)
    await eventually(d.url, idle)


def test_publish_period_is_model_time() -> None:
    assert publish_period_s(100.0, 1.0) == pytest.approx(0.1)
    assert publish_period_s(100.0, 10.0) == pytest.approx(1.0)  # slow motion: as stale in model time
    assert publish_period_s(100.0, 0.001) == MIN_PUBLISH_PERIOD_S
    assert publish_period_s(100.0, 0.0) == pytest.approx(0.1)
