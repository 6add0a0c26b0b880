"""Worker and telemetry faults against fake workers on loopback: circuit
breakers, a prefill that fails while its decode waits for KV, the first-token deadline, the
unknown-state guard for plugin policies, fast eviction on a refused connection, and KV-event
publisher restarts and oversized / garbage telemetry."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import zmq
import zmq.asyncio
from aiohttp import web
from test_router_support import (
    FakeKvPublisher,
    FakeWorker,
    ScriptedPolicy,
    free_port,
    serve_loopback,
    start_router,
    wait_for,
)

from sglang_ppd.core.types import RouteKind
from sglang_ppd.protocol import block_hash, kv_events, telemetry
from sglang_ppd.router import dispatch
from sglang_ppd.router.breaker import Breaker, BreakerState
from sglang_ppd.router.health import UNKNOWN_STATE_REASON

pytestmark = pytest.mark.timeout(30)


async def _post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, bytes, str | None]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, await r.read(), r.headers.get("x-ppd-route")


def test_breaker_opens_blocks_tries_once_and_closes() -> None:
    now = [0.0]
    b = Breaker(failure_threshold=3, cooldown_s=5.0, clock=lambda: now[0])
    for _ in range(2):
        b.on_failure()
    assert b.state is BreakerState.CLOSED and b.allows()
    b.on_failure()
    assert b.state is BreakerState.OPEN and not b.allows()
    now[0] = 5.0
    assert b.state is BreakerState.HALF_OPEN and b.allows()
    b.on_dispatch()
    assert not b.allows()  # one trial at a time
    b.on_failure()
    assert b.state is BreakerState.OPEN and b.num_opened == 2
    now[0] = 10.0
    b.on_dispatch()
    b.on_success()
    assert b.state is BreakerState.CLOSED and b.num_failures == 0


async def test_breaker_keeps_traffic_off_a_failing_decode_worker() -> None:
    p = await FakeWorker("prefill").start()
    bad = await FakeWorker("decode", fail_status=500).start()
    good = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, bad, good], breaker_failures=2, breaker_cooldown_s=60)
    try:
        for _ in range(5):  # ScriptedPolicy always picks the first healthy decode worker
            status, _, _ = await _post(f"{url}/generate", {"text": "abc"})
            assert status == 200
        assert len(bad.received) == 2 and len(good.received) == 5
        assert router.reliability.stats()["breakers"][bad.url] == "open"
        assert router.registry.get(bad.url).healthy  # type: ignore[union-attr]  # /health says ok
    finally:
        await runner.cleanup()
        for w in (p, bad, good):
            await w.stop()


async def test_prefill_failure_while_decode_waits_for_kv_aborts_decode_and_retries() -> None:
    bad_p = await FakeWorker("prefill", fail_status=500, delay_s=0.2).start()
    good_p = await FakeWorker("prefill").start()
    waiting = await FakeWorker("decode", wait_for_kv=1).start()
    router, runner, url = await start_router([bad_p, good_p, waiting])
    try:
        status, body, route = await _post(f"{url}/generate", {"text": "abc", "stream": True, "rid": "r1"})
        assert status == 200 and route == "pd" and body.endswith(b"data: [DONE]\n\n")
        assert b'"error"' not in body  # retried before the first token: no error, no duplicate
        # The decode side is not to blame: the retry pairs it with the other prefill worker.
        assert [b["rid"] for b in waiting.received] == ["r1", "r1-retry"] and len(good_p.received) == 1
        await wait_for(lambda: "r1" in waiting.aborted)  # the KV reservation on D is released
        assert router.metrics.retries == 1 and router.metrics.upstream_errors[waiting.url] == 0
    finally:
        await runner.cleanup()
        for w in (bad_p, good_p, waiting):
            await w.stop()


@pytest.mark.slow
async def test_streaming_first_token_deadline_gives_504_and_aborts() -> None:
    p = await FakeWorker("prefill").start()
    waiting = await FakeWorker("decode", wait_for_kv=1 << 30).start()
    _, runner, url = await start_router([p, waiting], first_token_timeout_s=0.5)
    try:
        status, body, _ = await _post(f"{url}/generate", {"text": "abc", "stream": True, "rid": "slow"})
        assert status == 504 and b"first token" in body
        await wait_for(lambda: "slow" in waiting.aborted)
    finally:
        await runner.cleanup()
        await p.stop()
        await waiting.stop()


async def test_local_route_to_a_worker_of_unknown_state_becomes_pd() -> None:
    """A plugin policy that routes local regardless of telemetry age is overruled by the router."""
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", server_info={"ppd_local_prefill": True}).start()
    policy = ScriptedPolicy()
    policy.force = RouteKind.LOCAL
    router, runner, url = await start_router(
        [p, d], policy, loads_poll_interval_s=3600, slo={"max_telemetry_age_ms": 200.0}
    )
    w = router.registry.get(d.url)
    assert w is not None
    try:
        await wait_for(lambda: w.telemetry_rx_s is not None)  # the one /v1/loads poll
        status, _, route = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200 and route == "local"
        await asyncio.sleep(0.3)  # no telemetry since: its age now exceeds 200 ms
        status, _, route = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200 and route == "pd"
        assert router.metrics.route_decisions[("pd", UNKNOWN_STATE_REASON)] == 1
        stats = router.reliability.stats()
        assert stats["local_overridden_unknown_state"] == 1
        assert stats["local_dispatched_unknown_state"] == 0
        assert "do_local_prefill" not in d.received[-1] and len(p.received) == 1
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_refused_connection_drops_the_prefix_index_and_evicts_at_once() -> None:
    pub = FakeKvPublisher(with_replay=False)
    p = await FakeWorker("prefill").start()
    d = await FakeWorker(
        "decode", server_info={"ppd_local_prefill": True, "page_size": 4, "kv_events": pub.kv_events_block(4)}
    ).start()
    d2 = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, d, d2], health_interval_s=3600)
    w = router.registry.get(d.url)
    assert w is not None and w.exact_index is not None
    try:
        await pub.publish(
            [
                kv_events.BlockStored(
                    block_hashes=block_hash.full_page_hashes(list(range(8)), 4),
                    parent_block_hash=None,
                    token_ids=list(range(8)),
                    block_size=4,
                    lora_id=None,
                )
            ]
        )
        await pub.resend_first_until(lambda: w.exact_index is not None and w.exact_index.num_blocks() == 2)
        await d.stop()  # the process is gone: connections are refused
        status, _, route = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200 and route == "pd" and len(d2.received) == 1  # retried elsewhere
        assert not w.healthy and w.exact_index.num_blocks() == 0  # at once, no health tick needed
    finally:
        await runner.cleanup()
        pub.close()
        for fw in (p, d, d2):
            await fw.stop()


async def test_kv_event_publisher_restart_resyncs_the_index() -> None:
    pub = FakeKvPublisher(with_replay=False)
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", server_info={"page_size": 4, "kv_events": pub.kv_events_block(4)}).start()
    router, runner, _ = await start_router([p, d])
    w = router.registry.get(d.url)
    assert w is not None and w.exact_index is not None
    stored = kv_events.BlockStored(
        block_hashes=block_hash.full_page_hashes(list(range(12)), 4),
        parent_block_hash=None,
        token_ids=list(range(12)),
        block_size=4,
        lora_id=None,
    )
    try:
        await pub.publish([stored])
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        await pub.publish([stored])
        await wait_for(lambda: w.num_kv_events == 2 and w.exact_index is not None)
        assert w.exact_index.num_blocks() == 3
        resyncs = w.exact_index.num_resyncs
        # A restarted publisher starts again at seq 0 with an empty cache.
        pub.seq, pub.buffer = 0, []
        await pub.publish(
            [
                kv_events.BlockStored(
                    block_hashes=block_hash.full_page_hashes([0, 1, 2, 3], 4),
                    parent_block_hash=None,
                    token_ids=[0, 1, 2, 3],
                    block_size=4,
                    lora_id=None,
                )
            ]
        )
        index = w.exact_index
        await pub.resend_first_until(lambda: index.num_resyncs > resyncs)
        assert index.num_blocks() == 1
    finally:
        await runner.cleanup()
        pub.close()
        await p.stop()
        await d.stop()


async def test_garbage_and_oversized_telemetry_is_dropped_and_the_router_keeps_going() -> None:
    ctx = zmq.asyncio.Context()
    port = free_port()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    p = await FakeWorker("prefill").start()
    d = await FakeWorker(
        "decode", server_info={"ppd_local_prefill": True, "ppd_telemetry_endpoint": f"tcp://*:{port}"}
    ).start()
    router, runner, url = await start_router([p, d])
    w = router.registry.get(d.url)
    assert w is not None
    good = telemetry.encode(
        telemetry.WorkerTelemetry(
            worker_url=d.url,
            role="decode",
            seq=1,
            num_running=4,
            num_waiting=0,
            queued_prefill_tokens=0,
            kv_used_tokens=0,
            kv_capacity_tokens=1000,
        )
    )[1]
    try:

        async def until(pred) -> None:  # type: ignore[no-untyped-def]
            for _ in range(250):
                if pred():
                    return
                await pub.send_multipart([telemetry.TOPIC, good])
                await asyncio.sleep(0.02)
            raise AssertionError("telemetry never arrived")

        await until(lambda: w.telemetry is not None)
        for junk in (b"\xc1", b"\x93\x01\x02", b"\xff" * 64, b"\x80"):
            await pub.send_multipart([telemetry.TOPIC, junk])
        await pub.send_multipart([telemetry.TOPIC, b"x", b"y"])  # wrong frame count
        await wait_for(lambda: w.num_dropped_messages >= 5)
        # Past ZMQ_MAXMSGSIZE the connection is cut before the message is read; ZMQ reconnects.
        await pub.send_multipart([telemetry.TOPIC, b"\x00" * (telemetry.MAX_MESSAGE_BYTES + 1024)])
        w.telemetry = None
        await until(lambda: w.telemetry is not None)
        assert w.telemetry is not None and w.telemetry.num_running == 4
        status, _, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200
    finally:
        await runner.cleanup()
        ctx.destroy(linger=0)
        await p.stop()
        await d.stop()


async def test_queued_request_waits_a_bounded_time_then_gets_503_with_retry_after() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", hang=True).start()
    router, runner, url = await start_router([p, d], max_inflight=1, max_queued=4, max_queue_wait_s=0.3)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            first = asyncio.create_task(s.post(f"{url}/generate", json={"text": "a"}))
            await wait_for(lambda: router.num_inflight == 1)
            async with s.post(f"{url}/generate", json={"text": "b"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert router.num_queued == 0 and router.metrics.rejected["queue_timeout"] == 1
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def _broken_decode(mode: str) -> tuple[web.AppRunner, str]:
    """A decode worker whose /generate reply is cut mid-body ("cut", HTTP 500) or is huge ("huge")."""

    async def generate(request: web.Request) -> web.StreamResponse:
        await request.read()
        if mode == "huge":
            return web.json_response({"text": "x" * 5000, "meta_info": {"completion_tokens": 1}})
        resp = web.StreamResponse(status=500, headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"error": ')
        assert request.transport is not None
        request.transport.close()
        return resp

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"disaggregation_mode": "decode"})

    app = web.Application()
    app.router.add_get("/server_info", info)
    app.router.add_get("/health", info)
    app.router.add_post("/generate", generate)
    app.router.add_post("/abort_request", info)
    return await serve_loopback(app)


async def test_cut_or_oversized_upstream_replies_are_clean_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "MAX_REPLY_BYTES", 1000)
    p = await FakeWorker("prefill").start()
    cut_runner, cut_url = await _broken_decode("cut")
    huge_runner, huge_url = await _broken_decode("huge")
    good = await FakeWorker("decode").start()
    cut, huge = FakeWorker("decode", url=cut_url), FakeWorker("decode", url=huge_url)
    router, runner, url = await start_router([p, cut, good])
    try:
        status, _, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200 and len(good.received) == 1  # the cut 500 was retried elsewhere
        await runner.cleanup()
        router, runner, url = await start_router([p, huge])
        status, body, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 502 and b"exceeds 1000 bytes" in body
    finally:
        await runner.cleanup()
        await cut_runner.cleanup()
        await huge_runner.cleanup()
        await p.stop()
        await good.stop()
