"""Error paths: 4xx naming the problem, 503 with no worker, retry before the first token, an error
event after it, aborts on failure and on client disconnect, timeouts, and 429 past the queue."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from test_router_support import FakeWorker, start_router, wait_for

pytestmark = pytest.mark.timeout(30)


async def _post(url: str, body: object, raw: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as s:
        kw = (
            {"data": raw, "headers": {"Content-Type": "application/json"}}
            if raw is not None
            else {"json": body}
        )
        async with s.post(url, **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.read(), dict(r.headers)


async def test_bad_requests_get_4xx_naming_the_problem() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    _, runner, url = await start_router([p, d], max_body_bytes=10_000)
    g = f"{url}/generate"
    try:
        cases = [
            (g, None, b"{not json", 400, "malformed JSON"),
            (g, None, b"\xff\xfe", 400, "malformed JSON"),
            (g, [1, 2], None, 400, "JSON object"),
            (g, {"text": "a", "input_ids": [1]}, None, 400, "exactly one of text or input_ids"),
            (g, {"text": ["a", "b"]}, None, 400, "batch"),
            (g, {"input_ids": [1, -2]}, None, 400, "input_ids"),
            (g, {"text": "a", "sampling_params": {"max_new_tokens": -1}}, None, 400, "max_new_tokens"),
            (g, {"text": "a", "sampling_params": {"max_new_tokens": "5"}}, None, 400, "max_new_tokens"),
            (g, {"text": "a", "stream": "yes"}, None, 400, "stream"),
            (g, {"text": "a", "bootstrap_room": 5}, None, 400, "bootstrap_room is set by the router"),
            (g, {"text": "x" * 20_000}, None, 413, ""),
            (f"{url}/v1/completions", {"prompt": "a", "model": "nope"}, None, 404, "not served"),
            (f"{url}/v1/completions", {"prompt": "a", "max_tokens": 10**9}, None, 400, "max_tokens"),
            (f"{url}/v1/chat/completions", {"messages": []}, None, 400, "messages"),
            (
                f"{url}/v1/chat/completions",
                {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
                None,
                400,
                "text content",
            ),
        ]
        for target, body, raw, status, needle in cases:
            got, text, _ = await _post(target, body, raw)
            assert got == status, (body, raw, got, text)
            assert needle in text.decode(errors="replace"), (needle, text)
        assert d.received == [] and p.received == []
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_no_healthy_worker_is_503() -> None:
    p = await FakeWorker("prefill").start()
    _, runner, url = await start_router([p])
    try:
        status, body, _ = await _post(f"{url}/generate", {"text": "a"})
        assert status == 503 and b"no healthy decode worker" in body
        async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
            assert r.status == 503
    finally:
        await runner.cleanup()
        await p.stop()


async def test_decode_failure_before_first_token_is_retried_on_another_route() -> None:
    p = await FakeWorker("prefill").start()
    bad = await FakeWorker("decode", fail_status=500).start()
    good = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, bad, good])
    try:
        status, body, headers = await _post(f"{url}/generate", {"text": "abc", "stream": True})
        assert status == 200 and headers["x-ppd-route"] == "pd"
        assert body.endswith(b"data: [DONE]\n\n") and b"error" not in body
        assert len(bad.received) == 1 and len(good.received) == 1
        assert router.metrics.retries == 1
        first_rid = bad.received[0]["rid"]
        assert good.received[0]["rid"] == f"{first_rid}-retry"
        await wait_for(lambda: first_rid in p.aborted)  # the failed attempt's prefill side is aborted
    finally:
        await runner.cleanup()
        for w in (p, bad, good):
            await w.stop()


@pytest.mark.slow
async def test_prefill_failure_aborts_decode_and_retries() -> None:
    bad_p = await FakeWorker("prefill", fail_status=503).start()
    good_p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", delay_s=0.5).start()  # waits for KV that never comes
    router, runner, url = await start_router([bad_p, good_p, d])
    try:
        status, _, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200
        first_rid = bad_p.received[0]["rid"]
        await wait_for(lambda: first_rid in d.aborted)
        assert good_p.received[0]["rid"] == f"{first_rid}-retry"
        assert f"{first_rid}-retry" in [b["rid"] for b in d.received]
    finally:
        await runner.cleanup()
        for w in (bad_p, good_p, d):
            await w.stop()


async def test_worker_4xx_is_passed_through_without_retry() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", fail_status=400).start()
    d2 = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, d, d2])
    try:
        status, body, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 400 and b"fake failure" in body
        assert d2.received == [] and router.metrics.retries == 0
    finally:
        await runner.cleanup()
        for w in (p, d, d2):
            await w.stop()


async def test_failure_after_first_token_ends_stream_with_error_event() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", die_after_chunks=2).start()
    d2 = await FakeWorker("decode").start()
    _, runner, url = await start_router([p, d, d2])
    try:
        status, body, _ = await _post(
            f"{url}/generate", {"text": "abc", "stream": True, "sampling_params": {"max_new_tokens": 8}}
        )
        frames = [f[6:] for f in body.split(b"\n\n") if f.startswith(b"data: ")]
        assert status == 200 and frames[-1] == b"[DONE]"
        assert [orjson.loads(f)["meta_info"]["completion_tokens"] for f in frames[:2]] == [1, 2]
        assert "not retried" in orjson.loads(frames[2])["error"]["message"]
        assert d2.received == []  # no duplicate output from a second worker
    finally:
        await runner.cleanup()
        for w in (p, d, d2):
            await w.stop()


@pytest.mark.slow
async def test_client_disconnect_aborts_upstream() -> None:
    p = await FakeWorker("prefill", hang=True).start()
    d = await FakeWorker("decode", hang=True).start()
    _, runner, url = await start_router([p, d])
    try:
        with pytest.raises(asyncio.TimeoutError):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as s:
                await s.post(f"{url}/generate", json={"text": "abc", "rid": "client-rid"})
        await wait_for(lambda: "client-rid" in d.aborted and "client-rid" in p.aborted)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_upstream_timeout_is_504_and_aborts() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", hang=True).start()
    _, runner, url = await start_router([p, d], first_token_timeout_s=0.3)
    try:
        status, body, _ = await _post(f"{url}/generate", {"text": "abc", "stream": True, "rid": "t1"})
        assert status == 504 and b"timed out" in body
        await wait_for(lambda: "t1" in d.aborted)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_overload_gets_429_with_retry_after() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", hang=True).start()
    router, runner, url = await start_router([p, d], max_inflight=1, max_queued=0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            first = asyncio.create_task(s.post(f"{url}/generate", json={"text": "a"}))
            await wait_for(lambda: router.num_inflight == 1)
            async with s.post(f"{url}/generate", json={"text": "b"}) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "1"
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_client_leaving_mid_stream_aborts_upstream() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", chunk_delay_s=0.05).start()
    router, runner, url = await start_router([p, d])
    try:
        async with aiohttp.ClientSession() as s:
            resp = await s.post(
                f"{url}/generate",
                json={
                    "text": "abc",
                    "rid": "leaver",
                    "stream": True,
                    "sampling_params": {"max_new_tokens": 500},
                },
            )
            assert (await resp.content.readline()).startswith(b"data: ")
            resp.close()  # the client goes away after its first token
        await wait_for(lambda: "leaver" in d.aborted)
        await wait_for(lambda: router.num_inflight == 0)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
