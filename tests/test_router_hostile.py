"""Regression tests for what a hostile test of the router found: one per defect, each failing on the
router before its worker-state spine (breaker lockout, NaN telemetry, rid squatting, remove/re-add
accounting, leaked URL secrets, error attribution, poisoned block table, huge dp_size, silent
decodes, and a KV-event feed killed by one message)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest
import zmq
import zmq.asyncio
from conftest import ClusterFactory
from test_router_support import PROFILE, FakeKvPublisher, FakeWorker, free_port, start_router, wait_for

from sglang_ppd.core.policy import load_policy
from sglang_ppd.protocol import block_hash, kv_events, telemetry
from sglang_ppd.protocol.kv_events import BlockStored
from sglang_ppd.protocol.server_info import MAX_DP_SIZE, parse_server_info
from sglang_ppd.router.breaker import Breaker
from sglang_ppd.router.prefix_index import BlockTable, ExactPrefixIndex

pytestmark = pytest.mark.timeout(60)


async def test_a_half_open_trial_ending_in_a_worker_4xx_closes_the_breaker(
    pd_cluster: ClusterFactory,
) -> None:
    c = await pd_cluster(decode={"fail_status": 500}, breaker_failures=1, breaker_cooldown_s=0.2)
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 500
    await asyncio.sleep(0.3)
    c.decode.fail_status = 400  # the trial: the worker answers, it just refuses this request
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 400
    c.decode.fail_status = None
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200


def test_a_late_release_never_frees_a_newer_trial() -> None:
    now = [0.0]
    b = Breaker(failure_threshold=1, cooldown_s=1.0, clock=lambda: now[0])
    b.on_failure()
    now[0] = 1.0
    first = b.on_dispatch()
    assert first is not None and not b.allows()
    b.on_failure()  # the first trial failed: open again
    now[0] = 2.0
    second = b.on_dispatch()
    assert second is not None and second != first
    b.release(first)  # the first attempt's late cleanup
    assert not b.allows()  # still one trial at a time
    b.release(second)
    assert b.allows()


@pytest.mark.slow
async def test_a_half_open_trial_whose_client_leaves_frees_the_trial(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(decode={"fail_status": 500}, breaker_failures=1, breaker_cooldown_s=0.2)
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 500
    await asyncio.sleep(0.3)
    c.decode.fail_status, c.decode.hang = None, True
    n = len(c.decode.received)
    trial = asyncio.create_task(c.post("/generate", {"text": "abc", "stream": True}))
    await wait_for(lambda: len(c.decode.received) > n)
    trial.cancel()  # the client leaves before the first token
    await asyncio.gather(trial, return_exceptions=True)
    c.decode.hang = False
    await asyncio.sleep(0.3)
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200


async def _telemetry_cluster(
    pd_cluster: ClusterFactory,
) -> tuple[object, zmq.asyncio.Socket, zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    port = free_port()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    info = {"ppd_local_prefill": True, "ppd_telemetry_endpoint": f"tcp://*:{port}"}
    c = await pd_cluster(decode={"server_info": info}, policy=load_policy("ppd_deflect", {}, PROFILE))
    return c, pub, ctx


@pytest.mark.slow
@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), -5.0])
async def test_non_finite_or_negative_telemetry_is_dropped_not_fatal(
    pd_cluster: ClusterFactory, bad: float
) -> None:
    c, pub, ctx = await _telemetry_cluster(pd_cluster)
    w = c.router.registry.get(c.decode.url)  # type: ignore[attr-defined]
    assert w is not None

    def msg(iter_ms: float) -> bytes:
        t = telemetry.WorkerTelemetry(
            worker_url=c.decode.url,
            role="decode",
            seq=1,
            num_running=4,
            num_waiting=0,  # type: ignore[attr-defined]
            queued_prefill_tokens=50_000,
            kv_used_tokens=0,
            kv_capacity_tokens=100_000,
            decode_iter_ms=iter_ms,
        )
        return telemetry.encode(t)[1]

    try:
        for _ in range(250):
            if w.telemetry is not None:
                break
            await pub.send_multipart([telemetry.TOPIC, msg(20.0)])
            await asyncio.sleep(0.02)
        for _ in range(5):
            await pub.send_multipart([telemetry.TOPIC, msg(bad)])
            await asyncio.sleep(0.05)
        status, body, _ = await c.post("/generate", {"text": "abc" * 50})  # type: ignore[attr-defined]
        assert status == 200, body
        assert w.num_rejected_fields >= 5  # the bad field is unknown (None) in the snapshot, counted
    finally:
        ctx.destroy(linger=0)


@pytest.mark.slow
async def test_a_client_cannot_squat_the_next_router_made_rids(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(decode={"delay_s": 0.5})
    _, raw, _ = await c.post("/v1/completions", {"prompt": "abc", "max_tokens": 2})
    rid = orjson.loads(raw)["id"]
    # The old scheme: a fixed 16-hex prefix and a counter, both visible in every reply's id.
    prefix, counter = rid[:16], int(rid[16:32] or "0", 16) if len(rid) >= 32 else 0
    squat = [f"{prefix}{counter + k:016x}" for k in range(1, 6)]
    squatters = [asyncio.create_task(c.post("/generate", {"text": "x", "rid": r})) for r in squat]
    await wait_for(lambda: len(c.decode.received) >= 6)
    status, body, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200, body
    assert all(s == 200 for s, _, _ in await asyncio.gather(*squatters))
    _, raw2, _ = await c.post("/v1/completions", {"prompt": "abc", "max_tokens": 2})
    assert len(orjson.loads(raw2)["id"]) >= 32 and orjson.loads(raw2)["id"][:16] != prefix


@pytest.mark.slow
async def test_removing_and_readding_a_busy_worker_keeps_its_counts(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(decode={"delay_s": 0.5})
    busy = [asyncio.create_task(c.post("/generate", {"text": "abc"})) for _ in range(5)]
    old = c.router.registry.get(c.decode.url)
    assert old is not None
    await wait_for(lambda: old.num_inflight == 5)
    async with aiohttp.ClientSession() as s:
        async with s.delete(f"{c.url}/workers", params={"url": c.decode.url}) as r:
            assert r.status == 200
        async with s.post(f"{c.url}/workers", json={"url": c.decode.url, "role": "decode"}) as r:
            assert r.status == 201
    new = c.router.registry.get(c.decode.url)
    assert new is not None and new is not old and new.generation > old.generation
    assert all(s == 200 for s, _, _ in await asyncio.gather(*busy))
    assert new.num_inflight == 0 and new.num_local_inflight == 0
    _, raw = await c.get("/stats")
    row = next(w for w in orjson.loads(raw)["workers"] if w["role"] == "decode")
    assert row["num_inflight"] == 0


async def test_worker_url_passwords_never_leak(
    pd_cluster: ClusterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    c = await pd_cluster()
    caplog.set_level(logging.DEBUG)
    url = f"http://ops:hunter2@127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{c.url}/workers", json={"url": url, "role": "decode"}) as r:
            assert r.status == 201 and b"hunter2" not in await r.read()
        async with s.post(f"{c.url}/workers", json={"url": url, "role": "decode"}) as r:
            assert r.status == 409 and b"hunter2" not in await r.read()
    _, metrics = await c.get("/metrics")
    assert b"ops:***@" in metrics and b"hunter2" not in metrics
    assert "hunter2" not in caplog.text


async def test_worker_4xx_is_not_an_upstream_error(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(decode={"fail_status": 400})
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 400
    assert sum(c.router.metrics.upstream_errors.values()) == 0


@pytest.mark.slow
async def test_a_decode_timeout_does_not_count_against_the_prefill(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(
        decode={"hang": True}, first_token_timeout_s=0.5, breaker_failures=1, breaker_cooldown_s=60
    )
    status, _, _ = await c.post("/generate", {"text": "abc", "stream": True})
    assert status == 504
    breakers = c.router.reliability.stats()["breakers"]
    assert breakers[c.decode.url] == "open" and breakers[c.prefill.url] == "closed"


@pytest.mark.slow
async def test_a_decode_whose_telemetry_went_silent_gets_no_new_requests() -> None:
    p = await FakeWorker("prefill").start()
    d1 = await FakeWorker("decode").start()
    d2 = await FakeWorker("decode").start()
    router, runner, url = await start_router(
        [p, d1, d2], loads_poll_interval_s=0.05, decode_silent_after_s=0.3
    )
    try:
        w1 = router.registry.get(d1.url)
        assert w1 is not None
        await wait_for(lambda: all(w.telemetry_rx_s is not None for w in router.registry.all()))
        d1.silent = True
        await asyncio.sleep(0.6)
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.post(f"{url}/generate", json={"text": "abc"}) as r:
                    assert r.status == 200
        assert not d1.received and len(d2.received) == 3
    finally:
        d1.silent = False
        await runner.cleanup()
        for w in (p, d1, d2):
            await w.stop()


def test_a_worker_cannot_poison_the_shared_block_table() -> None:
    page = 4
    honest_prompt, other_prompt = list(range(100, 108)), list(range(200, 208))
    true_hashes = block_hash.full_page_hashes(honest_prompt, page)
    table = BlockTable(page)
    attacker, honest = ExactPrefixIndex(table), ExactPrefixIndex(table)
    # The attacker claims the honest worker's first block hash for another prompt's first page.
    attacker.apply(0, [BlockStored([true_hashes[0]], None, other_prompt[:page], page, None)])
    honest.apply(0, [BlockStored(true_hashes, None, honest_prompt, page, None)])
    assert honest.hit_len(table.resolve(other_prompt)) == 0
    assert honest.hit_len(table.resolve(honest_prompt)) == len(honest_prompt)
    assert attacker.num_blocks() == 0 and attacker.num_rejected == 1


def test_server_info_dp_size_is_capped() -> None:
    block = {
        "publisher": "zmq",
        "endpoint_host": "*",
        "endpoint_port_base": 5557,
        "topic": "",
        "block_size": 1,
    }
    ok = parse_server_info({"kv_events": {**block, "dp_size": 2}}, "http://127.0.0.1:1")
    assert ok.kv_events is not None and len(ok.kv_events.endpoints) == 2
    for bad in (MAX_DP_SIZE + 1, 1023, 10**9, -3, "8", 2.5):
        info = parse_server_info({"kv_events": {**block, "dp_size": bad}}, "http://127.0.0.1:1")
        assert info.kv_events is None, bad
    near_top = parse_server_info(
        {"kv_events": {**block, "endpoint_port_base": 65535, "dp_size": 2}}, "http://h:1"
    )
    assert near_top.kv_events is None  # rank 1 would be port 65536


async def test_one_kv_message_that_breaks_the_decoder_does_not_stop_the_feed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = kv_events.decode_batch

    def flaky(payload: bytes) -> kv_events.KVEventBatch:
        if payload == b"boom":
            raise TypeError("an unexpected decoder bug")
        return real(payload)

    monkeypatch.setattr(kv_events, "decode_batch", flaky)
    pub = FakeKvPublisher(with_replay=False)
    page = 4
    first, second = list(range(100, 112)), list(range(300, 308))
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", server_info={"kv_events": pub.kv_events_block(page)}).start()
    router, runner, _ = await start_router([p, d])
    try:
        w = router.registry.get(d.url)
        assert w is not None and w.exact_index is not None
        index = w.exact_index
        await pub.publish([BlockStored(block_hash.full_page_hashes(first, page), None, first, page, None)])
        await pub.resend_first_until(lambda: index.num_blocks() == 3)
        await pub.publish([], raw=b"boom")
        # The next batch finds a gap (the dropped one): the index resyncs, then holds only it.
        await pub.publish([BlockStored(block_hash.full_page_hashes(second, page), None, second, page, None)])
        await wait_for(lambda: index.num_blocks() == 2)
        assert w.dropped["kv:TypeError"] == 1
    finally:
        await runner.cleanup()
        pub.close()
        await p.stop()
        await d.stop()
