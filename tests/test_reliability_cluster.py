"""A decode worker killed mid-load, and a telemetry blackout, on an emulated 1P2D cluster:
``sglang-ppd emulate`` subprocesses, real HTTP and ZMQ on loopback, the in-process router with the
``ppd_deflect`` policy.

Worker kill: SIGKILL a decode worker in the middle of a multi-turn load. Every request completes,
or gets a clean error the client can retry (a JSON error before the first token, or an error event then
``[DONE]`` after it); none is lost or hung. A request sent right after the kill is served. The dead
worker's prefixes leave the index at once, and no local route goes to it. The survivors end with no
KV reserved and nothing running (every aborted request was released).

Telemetry blackout (short window; ``benchmarks/reliability_telemetry.py`` runs the full 30 s): all
telemetry stops under load. Once it is older than ``max_telemetry_age_ms`` every request is routed
PD, none local to a worker of unknown state, and all complete; when telemetry returns, local routes
come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from test_reliability_support import Outcome, router_over, stream_request
from test_router_support import wait_for

from sglang_ppd.router.service import Router

pytestmark = pytest.mark.timeout(90)
SYSTEM = "You are a careful assistant. Answer briefly and cite the document. " * 10
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture
def cluster(emulated_worker: Any) -> Iterator[list[Any]]:
    """1P2D, KV pages of 16 tokens, decode workers able to prefill locally."""
    workers = [emulated_worker("prefill", "--page-size", "16", time_scale=0.2)]
    workers += [emulated_worker("decode", "--page-size", "16", "--ppd", time_scale=0.2) for _ in range(2)]
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()


async def _session(
    s: aiohttp.ClientSession, url: str, sid: int, num_turns: int, outcomes: list[Outcome], max_new: int
) -> None:
    history = f"{SYSTEM} Session {sid}."
    for turn in range(1, num_turns + 1):
        history += f" Question {turn}: what does part {sid}.{turn} say?"
        body = {"text": history, "sampling_params": {"max_new_tokens": max_new}}
        headers = {"x-ppd-session-id": f"s{sid}", "x-ppd-turn": str(turn)}
        out = await stream_request(s, url, body, headers, REQUEST_TIMEOUT_S)
        outcomes.append(out)
        if not out.completed:
            return  # the client would retry; this one ends its session
        history += " " + out.last_text


async def _load(url: str, num_sessions: int, num_turns: int, max_new: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(
            *(_session(s, url, i, num_turns, outcomes, max_new) for i in range(num_sessions))
        )
    return outcomes


async def _survivors_released(s: aiohttp.ClientSession, urls: list[str]) -> bool:
    for u in urls:
        async with s.get(f"{u}/v1/loads") as r:
            load = (await r.json())["loads"][0]
        if load["num_running_reqs"] or load["num_waiting_reqs"] or load["num_used_tokens"]:
            return False
    return True


@pytest.mark.slow
async def test_sigkill_a_decode_worker_mid_load(cluster: list[Any]) -> None:
    p, d1, d2 = cluster
    router, runner, url = await router_over(cluster)
    w1 = router.registry.get(d1.url)
    assert w1 is not None and w1.exact_index is not None
    try:
        load = asyncio.create_task(_load(url, num_sessions=16, num_turns=3, max_new=48))
        index = w1.exact_index
        await wait_for(lambda: w1.num_inflight >= 2 and index.num_blocks() > 0, timeout_s=30)
        d1.kill()
        async with aiohttp.ClientSession() as s:
            fresh = await stream_request(
                s, url, {"text": "A new user arrives.", "sampling_params": {"max_new_tokens": 4}}, {}, 10
            )
        await wait_for(lambda: index.num_blocks() == 0, timeout_s=5)
        outcomes = await asyncio.wait_for(load, 60)
        await wait_for(lambda: not w1.healthy, timeout_s=5)

        assert fresh.completed, fresh
        lost = [o for o in outcomes if o.hung or o.exception is not None or o.status is None]
        assert lost == []
        unclean = [
            o
            for o in outcomes
            if not o.completed
            and not (o.error_before_first_token and o.status in (502, 503, 504))
            and not (o.error_event and o.done)
        ]
        assert unclean == []
        num_errors_mid_stream = sum(o.error_event for o in outcomes)
        assert router.metrics.retries + num_errors_mid_stream >= 1  # the kill hit in-flight requests
        assert router.reliability.stats()["local_dispatched_unknown_state"] == 0
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                if await _survivors_released(s, [p.url, d2.url]):
                    break
                await asyncio.sleep(0.05)
            assert await _survivors_released(s, [p.url, d2.url])
    finally:
        await runner.cleanup()


async def _until_local(url: str, max_rounds: int = 5) -> bool:
    """Run small loads until one request is routed local or deflected (KV events of a turn reach the
    router asynchronously, so one round may not show it); every request must complete."""
    for _ in range(max_rounds):
        outcomes = await _load(url, num_sessions=6, num_turns=3, max_new=16)
        assert all(o.completed for o in outcomes)
        if any(o.route != "pd" for o in outcomes):
            return True
    return False


def _blackout(router: Router) -> None:
    """All telemetry stops: the router's subscribers and pollers receive nothing from now on."""
    for w in router.registry.all():
        w.cancel_tasks()


@pytest.mark.slow
async def test_telemetry_blackout_routes_pd_never_local_to_unknown_state(cluster: list[Any]) -> None:
    router, runner, url = await router_over(cluster, slo={"max_telemetry_age_ms": 300.0})
    decode = [w for w in router.registry.all() if w.role.value == "decode"]
    try:
        await wait_for(lambda: all(router.reliability.state_known(w) for w in decode), timeout_s=5)
        assert await _until_local(url)  # PPD at work while telemetry flows

        _blackout(router)
        await wait_for(lambda: all(router.reliability.state_known(w) is False for w in decode), timeout_s=5)
        dark = await _load(url, num_sessions=6, num_turns=3, max_new=16)
        assert all(o.completed for o in dark) and all(o.route == "pd" for o in dark)
        assert router.reliability.stats()["local_dispatched_unknown_state"] == 0

        for w in router.registry.all():  # telemetry returns (the publishers never stopped)
            assert await router._discover(w)
        await wait_for(lambda: all(router.reliability.state_known(w) for w in decode), timeout_s=5)
        assert await _until_local(url)
    finally:
        await runner.cleanup()
