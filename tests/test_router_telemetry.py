"""Load telemetry: our WorkerTelemetry PUB, SGLang's LoadStat PUB, the /v1/loads poll, and ages."""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio
from test_router_support import FakeWorker, ScriptedPolicy, free_port, start_router, wait_for

from sglang_ppd.protocol import load_stat, telemetry

pytestmark = pytest.mark.timeout(30)


def _pub(ctx: zmq.asyncio.Context, port: int) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    return sock


@pytest.mark.slow
async def test_worker_telemetry_fills_snapshot_and_goes_stale() -> None:
    ctx = zmq.asyncio.Context()
    port = free_port()
    pub = _pub(ctx, port)
    p = await FakeWorker("prefill").start()
    d = await FakeWorker(
        "decode", server_info={"ppd_local_prefill": True, "ppd_telemetry_endpoint": f"tcp://*:{port}"}
    ).start()
    router, runner, _ = await start_router([p, d], ScriptedPolicy(), slo={"max_telemetry_age_ms": 100.0})
    w = router.registry.get(d.url)
    assert w is not None
    t = telemetry.WorkerTelemetry(
        worker_url=d.url,
        role="decode",
        seq=1,
        num_running=7,
        num_waiting=3,
        queued_prefill_tokens=50,
        kv_used_tokens=400,
        kv_capacity_tokens=1000,
        decode_iter_ms=12.5,
        supports_local_prefill=True,
    )
    try:
        while w.telemetry is None:  # slow joiner: repeat until the SUB is connected
            await pub.send_multipart(telemetry.encode(t))
            await asyncio.sleep(0.05)
        snap = next(s for s in router.snapshot().workers if s.worker_id == d.url)
        assert (snap.num_running, snap.num_waiting, snap.kv_used_tokens, snap.decode_iter_ms) == (
            7,
            3,
            400,
            12.5,
        )
        assert snap.age_ms is not None and snap.supports_local_prefill
        # No more telemetry: the same worker is seen as stale once its age passes the SLO bound.
        await asyncio.sleep(0.3)
        stale = next(s for s in router.snapshot().workers if s.worker_id == d.url)
        assert stale.age_ms is not None and stale.age_ms > snap.age_ms
        assert not stale.is_fresh(router.slo.max_telemetry_age_ms)
        # The prefill worker has no telemetry: it is polled on /v1/loads instead.
        await wait_for(lambda: router.registry.get(p.url).telemetry_source == "v1/loads")  # type: ignore[union-attr]
        ps = next(s for s in router.snapshot().workers if s.worker_id == p.url)
        assert (ps.num_running, ps.num_waiting, ps.kv_capacity_tokens) == (2, 1, 1000)
        # Garbage on the telemetry socket is dropped and counted, never fatal.
        before = w.num_dropped_messages
        while w.num_dropped_messages == before:
            await pub.send_multipart([telemetry.TOPIC, b"\xc1\xc1"])
            await asyncio.sleep(0.05)
        newer = telemetry.WorkerTelemetry(**{**{f: getattr(t, f) for f in t.__struct_fields__}, "seq": 2})
        await pub.send_multipart(telemetry.encode(newer))
        await wait_for(lambda: w.telemetry is not None and w.telemetry.seq == 2)
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
        ctx.destroy(linger=0)


async def test_sglang_loadstat_publisher_is_subscribed() -> None:
    ctx = zmq.asyncio.Context()
    port = free_port()
    pub = _pub(ctx, port)
    kv_block = {
        "publisher": "zmq",
        "endpoint_host": "*",
        "endpoint_port_base": free_port(),
        "topic": "",
        "block_size": 1,
        "dp_size": 1,
        "load_endpoint_port_base": port,
        "load_topic": "load",
    }
    p = await FakeWorker("prefill", server_info={"kv_events": kv_block}).start()
    d = await FakeWorker("decode").start()
    router, runner, _ = await start_router([p, d], ScriptedPolicy())
    w = router.registry.get(p.url)
    assert w is not None
    try:
        while w.load is None or w.telemetry_source != "loadstat":
            await pub.send_multipart(load_stat.encode_message(0, load_stat.LoadStat(5, 4, 300, 2000, 0)))
            await asyncio.sleep(0.05)
        snap = next(s for s in router.snapshot().workers if s.worker_id == p.url)
        assert (snap.num_running, snap.num_waiting, snap.kv_used_tokens, snap.kv_capacity_tokens) == (
            5,
            4,
            300,
            2000,
        )
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
        ctx.destroy(linger=0)
