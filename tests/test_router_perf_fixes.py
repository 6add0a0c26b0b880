"""Router fixes that ride with the data-path work: ``x-ppd-reason``, OpenAI ``return_token_ids``,
client disconnects counted apart from errors, the exact ``num_local_inflight`` and policy errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from test_router_support import FakeWorker, ScriptedPolicy, start_router, wait_for

from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo

pytestmark = pytest.mark.timeout(30)


class IdsWorker(FakeWorker):
    """A fake that also streams ``output_ids`` (cumulative, SGLang's default)."""

    def _reply(self, ids: list[int], n: int, done: bool) -> dict[str, Any]:
        out = super()._reply(ids, n, done)
        out["output_ids"] = [1000 + i for i in range(n)]
        return out


async def _post(url: str, body: object) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.read(), dict(r.headers)


async def test_reason_header_and_openai_token_ids() -> None:
    p = await IdsWorker("prefill").start()
    d = await IdsWorker("decode").start()
    _, runner, url = await start_router([p, d])
    try:
        status, body, headers = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 200 and headers["x-ppd-route"] == "pd" and headers["x-ppd-reason"] == "test:pd"
        req = {"prompt": [5, 6, 7], "max_tokens": 4, "return_token_ids": True}
        status, body, headers = await _post(f"{url}/v1/completions", req)
        assert status == 200 and headers["x-ppd-reason"] == "test:pd"
        assert orjson.loads(body)["choices"][0]["token_ids"] == [1000, 1001, 1002, 1003]
        status, body, _ = await _post(f"{url}/v1/completions", {**req, "stream": True})
        ids: list[int] = []
        for line in body.split(b"\n\n"):
            if line.startswith(b"data: {"):
                for choice in orjson.loads(line[6:])["choices"]:
                    ids += choice.get("token_ids") or []
        assert status == 200 and ids == [1000, 1001, 1002, 1003]
        status, body, _ = await _post(f"{url}/v1/completions", {"prompt": "a", "max_tokens": 2})
        assert "token_ids" not in orjson.loads(body)["choices"][0]
        status, body, _ = await _post(f"{url}/v1/completions", {"prompt": "a", "return_token_ids": 1})
        assert status == 400 and b"return_token_ids" in body
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


@pytest.mark.slow
async def test_client_disconnect_is_not_an_error_and_local_inflight_is_exact() -> None:
    d = await FakeWorker("decode", server_info={"ppd_local_prefill": True}).start()
    d.delay_s = 0.6  # before the first token
    policy = ScriptedPolicy()
    policy.force = RouteKind.LOCAL
    router, runner, url = await start_router([d], policy=policy)
    try:
        w = router.registry.get(d.url)
        assert w is not None
        await wait_for(lambda: w.supports_local_prefill)
        task = asyncio.create_task(_post(f"{url}/generate", {"text": "abc", "stream": True}))
        await wait_for(lambda: w.num_local_inflight == 1)
        assert router.snapshot().decode[0].num_local_inflight == 1
        status, _, headers = await task
        assert status == 200 and headers["x-ppd-route"] == "local"
        assert w.num_local_inflight == 0
        # A client that goes away mid-request: counted as a client abort, not an error.
        task = asyncio.create_task(_post(f"{url}/generate", {"text": "abc", "stream": True}))
        await wait_for(lambda: w.num_local_inflight == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await wait_for(lambda: router.metrics.client_aborts == 1)
        await wait_for(lambda: w.num_local_inflight == 0)
        async with aiohttp.ClientSession() as s, s.get(f"{url}/stats") as r:
            stats = await r.json()
        assert stats["requests"]["num_client_aborts"] == 1 and stats["requests"]["errors"] == 0
    finally:
        await runner.cleanup()
        await d.stop()


class _Raising(ScriptedPolicy):
    exc: Exception = ValueError("boom")

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        raise self.exc


async def test_policy_errors_are_503_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    policy = _Raising()
    router, runner, url = await start_router([p, d], policy=policy)
    try:
        for _ in range(2):
            status, body, _ = await _post(f"{url}/generate", {"text": "abc"})
            assert status == 503 and b"ValueError: boom" in body
        assert router.metrics.route_decisions[("none", "policy_error")] == 2
        assert sum("boom" in str(r.exc_info) for r in caplog.records if r.exc_info) == 1  # logged once
        policy.exc = NoRouteError("nowhere")
        status, body, _ = await _post(f"{url}/generate", {"text": "abc"})
        assert status == 503 and b"nowhere" in body
        assert router.metrics.route_decisions[("none", "policy_error")] == 2
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


@pytest.mark.slow
async def test_a_long_queue_before_the_first_token_is_not_a_read_timeout() -> None:
    """Before the first token only the (scaled) first-token deadline applies, not read_timeout_s."""
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", delay_s=0.6).start()  # queued longer than the read timeout
    _, runner, url = await start_router([p, d], read_timeout_s=0.2, first_token_timeout_s=10.0)
    try:
        for stream in (True, False):
            status, body, _ = await _post(f"{url}/generate", {"text": "abc", "stream": stream})
            assert status == 200 and b"error" not in body
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
