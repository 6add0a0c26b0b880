"""Runtime worker add/remove, health eviction and re-admission, API/admin keys, /metrics and /stats."""

from __future__ import annotations

import aiohttp
import pytest
from test_router_support import FakeWorker, start_router, wait_for

pytestmark = pytest.mark.timeout(30)


async def test_workers_can_be_listed_added_and_removed() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    extra = await FakeWorker("decode", server_info={"ppd_local_prefill": True}).start()
    router, runner, url = await start_router([p], admin_key="adm")
    admin = {"Authorization": "Bearer adm"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/generate", json={"text": "a"}) as r:
                assert r.status == 503
            async with s.post(f"{url}/workers", json={"url": d.url, "role": "decode"}) as r:
                assert r.status == 401
            async with s.post(f"{url}/workers", json={"url": d.url, "role": "decode"}, headers=admin) as r:
                assert r.status == 201 and (await r.json())["role"] == "decode"
            async with s.post(
                f"{url}/workers", json={"url": extra.url, "role": "decode"}, headers=admin
            ) as r:
                assert r.status == 201 and (await r.json())["supports_local_prefill"] is True
            async with s.post(f"{url}/workers", json={"url": d.url, "role": "decode"}, headers=admin) as r:
                assert r.status == 409
            async with s.post(f"{url}/workers", json={"url": d.url, "role": "middle"}, headers=admin) as r:
                assert r.status == 400 and "role" in await r.text()
            async with s.get(f"{url}/workers") as r:
                assert [w["url"] for w in (await r.json())["workers"]] == [p.url, d.url, extra.url]
            async with s.post(f"{url}/generate", json={"text": "a"}) as r:
                assert r.status == 200
            async with s.delete(f"{url}/workers", params={"url": d.url}, headers=admin) as r:
                assert r.status == 200
            async with s.delete(f"{url}/workers", params={"url": d.url}, headers=admin) as r:
                assert r.status == 404
            async with s.post(f"{url}/generate", json={"text": "a"}) as r:
                assert r.status == 200
        assert len(d.received) == 1 and len(extra.received) == 1
    finally:
        await runner.cleanup()
        for w in (p, d, extra):
            await w.stop()


async def test_unhealthy_worker_is_evicted_and_readmitted() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, d], health_failures=2)
    w = router.registry.get(d.url)
    assert w is not None
    try:
        d.healthy = False
        await wait_for(lambda: not w.healthy)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/generate", json={"text": "a"}) as r:
                assert r.status == 503
            async with s.get(f"{url}/health") as r:
                assert r.status == 503
            d.healthy = True
            await wait_for(lambda: w.healthy)
            async with s.post(f"{url}/generate", json={"text": "a"}) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_api_key_guards_everything_but_health() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    _, runner, url = await start_router([p, d], api_key="sekret")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/health") as r:
                assert r.status == 200
            for path in ("/v1/models", "/metrics", "/stats", "/workers"):
                async with s.get(f"{url}{path}") as r:
                    assert r.status == 401, path
            async with s.post(
                f"{url}/generate", json={"text": "a"}, headers={"Authorization": "Bearer nope"}
            ) as r:
                assert r.status == 401
            ok = {"Authorization": "Bearer sekret"}
            async with s.post(f"{url}/generate", json={"text": "a"}, headers=ok) as r:
                assert r.status == 200
            async with s.post(f"{url}/workers", json={"url": d.url, "role": "decode"}, headers=ok) as r:
                assert r.status == 409  # the API key is the admin key when no admin key is set
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_metrics_and_stats_report_routes_latency_and_kv_bytes() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    router, runner, url = await start_router([p, d])
    try:
        async with aiohttp.ClientSession() as s:
            for turn in ("1", "2"):
                async with s.post(
                    f"{url}/generate",
                    json={
                        "input_ids": [1, 2, 3, 4],
                        "stream": True,
                        "sampling_params": {"max_new_tokens": 4},
                    },
                    headers={"x-ppd-session-id": "s1", "x-ppd-turn": turn},
                ) as r:
                    await r.read()
            async with s.get(f"{url}/metrics") as r:
                text = await r.text()
            async with s.get(f"{url}/stats") as r:
                stats = await r.json()
        assert 'sglang_ppd_route_decisions_total{route="pd",reason="test:pd"} 2' in text
        assert "sglang_ppd_decision_seconds_count 2" in text
        assert 'sglang_ppd_ttft_seconds_count{turn="2+"} 1' in text
        assert f"sglang_ppd_kv_bytes_transferred_total {2 * 4 * router.profile.kv_bytes_per_token}" in text
        assert f'sglang_ppd_telemetry_age_seconds{{worker="{d.url}",role="decode"}}' in text
        assert stats["routes"] == {"pd": 2, "local": 0, "deflect": 0}
        assert stats["top_reasons"] == [{"route": "pd", "reason": "test:pd", "count": 2}]
        assert stats["latency"]["turn1"]["count"] == 1 and stats["latency"]["turn2+"]["count"] == 1
        assert stats["latency"]["turn2+"]["ttft_p50_ms"] is not None
        assert stats["kv_bytes"]["avoided"] == 0 and stats["slo_attainment"]["count"] == 2
        assert {w["role"] for w in stats["workers"]} == {"prefill", "decode"}
        assert stats["decision_ms"]["count"] == 2
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


def test_decision_reasons_are_a_bounded_label_set() -> None:
    from sglang_ppd.router.metrics import MAX_REASONS, RouterMetrics

    m = RouterMetrics()
    for i in range(MAX_REASONS + 10):
        m.count_decision("local", f"hit {i} tokens")
    assert len(m.route_decisions) == MAX_REASONS + 1 and m.route_decisions[("local", "other")] == 10
    assert 'reason="other"' in m.render([])
