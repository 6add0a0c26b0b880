"""The router as a CLI subprocess, and against emulated SGLang workers (``sglang-ppd emulate``
subprocesses on loopback): PD end to end, and a second turn routed local on exact KV-event hits."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import PairConfig
from test_router_support import (
    PROFILE,
    FakeWorker,
    ScriptedPolicy,
    free_port,
    stop_process,
    wait_for,
    wait_until_healthy,
)

from sglang_ppd.core.policy import load_policy
from sglang_ppd.router.app import start_server
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer

pytestmark = pytest.mark.timeout(60)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sglang_ppd.cli",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
def emulated(emulated_worker: Any) -> Iterator[tuple[str, int, str]]:
    """1P1D at time scale 0: (prefill URL, its bootstrap port, decode URL)."""
    p = emulated_worker("prefill", time_scale=0.0)
    d = emulated_worker("decode", "--ppd", time_scale=0.0)
    assert p.bootstrap_port is not None
    try:
        yield p.url, p.bootstrap_port, d.url
    finally:
        p.stop()
        d.stop()


@contextlib.asynccontextmanager
async def _pd_router_cli(purl: str, bport: int, durl: str) -> AsyncIterator[str]:
    """``sglang-ppd router --policy pd`` over one P and one D: yields its URL once healthy, and checks
    that it exits 0 on SIGTERM."""
    port = free_port()
    router = await _spawn(
        "router",
        "--prefill",
        purl,
        str(bport),
        "--decode",
        durl,
        "--port",
        str(port),
        "--policy",
        "pd",
        "--log-level",
        "warning",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_healthy(url, router)
        yield url
    finally:
        assert await stop_process(router) == 0


@pytest.mark.slow
async def test_cli_router_end_to_end_and_clean_sigterm() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    try:
        async with _pd_router_cli(p.url, 9100, d.url) as url:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"{url}/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 5}}
                ) as r:
                    assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
                    body = await r.json()
                async with s.post(
                    f"{url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True},
                ) as r:
                    assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
                    raw = await r.read()
            assert body["meta_info"]["completion_tokens"] == 5 and len(body["text"]) == 5
            assert raw.endswith(b"data: [DONE]\n\n")
            assert p.received[0]["bootstrap_port"] == 9100  # the CLI's BOOTSTRAP_PORT wins over /server_info
    finally:
        await p.stop()
        await d.stop()


@pytest.mark.slow
async def test_pd_through_an_emulated_cluster(emulated: tuple[str, int, str]) -> None:
    purl, bport, durl = emulated
    async with _pd_router_cli(purl, bport, durl) as url:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{url}/generate",
                json={"text": "hello", "sampling_params": {"max_new_tokens": 5}, "stream": True},
            ) as r,
        ):
            assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
            raw = await r.read()
        assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw


@pytest.mark.slow
async def test_cli_rejects_bad_flags() -> None:
    for args, needle in (
        (("router", "--policy", "no-such-policy"), b"unknown policy"),
        (("router", "--prefill", "http://127.0.0.1:1", "notaport"), b"bootstrap port"),
        (("router", "--decode", "ftp://x"), b"http"),
    ):
        proc = await _spawn(*args)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2 and needle in err, (args, err)


# Two emulator processes start inside this test's budget, and KV events and telemetry cross ZMQ: on a
# loaded 2-core machine that alone took over a minute once, so it gets three, and its waits one each.
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_second_turn_goes_local_on_exact_kv_event_hits(
    emulated: tuple[str, int, str], pair_config: PairConfig
) -> None:
    durl = emulated[2]
    # A loaded 2-core CI box can delay the emulator's telemetry; staleness is not under test here.
    cfg = pair_config(emulated, slo={"max_telemetry_age_ms": 60_000.0})
    policy = ScriptedPolicy()
    policy.local_min_hit = 64
    router = Router(cfg, policy, PROFILE, ByteTokenizer(), "scripted")
    runner, port = await start_server(router, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    turn1 = list(("You are a helpful assistant. " * 8 + "Question one?").encode())
    try:
        w = router.registry.get(durl)
        assert w is not None and w.exact_index is not None and w.supports_local_prefill
        async with aiohttp.ClientSession() as s:
            # ZMQ's slow joiner: a batch published before the subscription is live is lost, and only a
            # later batch reveals the gap (then replayed). Turn 1's batch may be the last one for a
            # while, so first make sure the feed is live: warm-up prompts until one batch arrives.
            for i in range(20):
                warm = list(f"warm-up {i} ".encode() * 20)
                async with s.post(
                    f"{url}/generate", json={"input_ids": warm, "sampling_params": {"max_new_tokens": 2}}
                ) as r:
                    assert r.status == 200
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: w.num_kv_events > 0, timeout_s=3.0)
                    break
            assert w.num_kv_events > 0, "no KV event reached the router after 20 warm-up requests"
            async with s.post(
                f"{url}/generate",
                json={"input_ids": turn1, "sampling_params": {"max_new_tokens": 8}, "stream": True},
            ) as r:
                assert r.headers["x-ppd-route"] == "pd"
                await r.read()
            async with s.post(
                f"{url}/generate", json={"input_ids": turn1, "sampling_params": {"max_new_tokens": 8}}
            ) as r:
                answer = list((await r.json())["text"].encode())
            turn2 = turn1 + answer + list(b" And question two?")
            page = w.exact_index.block_size
            resident = (len(turn1) + len(answer) - 1) // page * page
            await wait_for(
                lambda: router.features("x", turn2, 8, None, None).cached_len.get(durl, 0) >= resident,
                timeout_s=60.0,
            )
            # The router guards local routes behind fresh telemetry: let the first snapshot arrive.
            await wait_for(lambda: w.age_ms(time.monotonic()) is not None, timeout_s=60.0)
            async with s.post(
                f"{url}/generate", json={"input_ids": turn2, "sampling_params": {"max_new_tokens": 8}}
            ) as r:
                assert r.status == 200 and r.headers["x-ppd-route"] == "local", (
                    dict(router.metrics.route_decisions),
                    w.telemetry_source,
                    w.age_ms(time.monotonic()),
                )
        assert policy.seen[-1][0].cached_len[durl] >= resident
        assert durl not in policy.seen[-1][0].approx_workers
    finally:
        await runner.cleanup()


@pytest.fixture
def slow_telemetry(emulated_worker: Any) -> Iterator[tuple[str, int, str]]:
    """1P1D in real time whose decode worker publishes its load only every 2 s: a reply ends well
    before the next sample, as it does between any two samples at any period."""
    p = emulated_worker("prefill", time_scale=1.0)
    d = emulated_worker("decode", "--ppd", "--telemetry-period-ms", "2000", time_scale=1.0)
    assert p.bootstrap_port is not None
    try:
        yield p.url, p.bootstrap_port, d.url
    finally:
        p.stop()
        d.stop()


@pytest.mark.slow
async def test_an_immediate_second_turn_at_idle_goes_local(
    slow_telemetry: tuple[str, int, str], pair_config: PairConfig
) -> None:
    """Zero think time: Turn 2 is sent the moment Turn 1's reply ends. The decode worker's last
    sample still counts Turn 1 as running; the router knows it finished, so Turn 2 appends locally
    on an idle worker (the default policy, not a scripted one)."""
    durl = slow_telemetry[2]
    cfg = pair_config(slow_telemetry, slo={"max_telemetry_age_ms": 60_000.0})  # staleness is not under test
    router = Router(cfg, load_policy("ppd_deflect", {}, PROFILE), PROFILE, ByteTokenizer(), "ppd_deflect")
    runner, port = await start_server(router, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    turn1 = list(("You are a helpful assistant. " * 8 + "Question one?").encode())
    params = {"max_new_tokens": 400, "ignore_eos": True}
    body = {"input_ids": turn1, "sampling_params": params, "stream": True}
    try:
        w = router.registry.get(durl)
        assert w is not None and w.exact_index is not None
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/generate", json=body) as r:
                assert r.headers["x-ppd-route"] == "pd"
                # Read until a sample shows Turn 1 running, then to the end.
                await r.content.readline()
                await wait_for(lambda: w.sample is not None and (w.sample.num_running or 0) >= 1)
                seq = w.telemetry.seq if w.telemetry is not None else None
                text = b""
                async for line in r.content:
                    if line.startswith(b"data:") and b"[DONE]" not in line:
                        text = line
            answer = list(orjson.loads(text[5:])["text"].encode())
            turn2 = turn1 + answer + list(b" And question two?")
            hit = lambda: router.features("x", turn2, 8, None, None).cached_len.get(durl, 0)  # noqa: E731
            await wait_for(lambda: hit() > len(turn1))
            # The scenario under test: the router's latest sample predates Turn 1's end.
            assert w.telemetry is not None and w.telemetry.seq == seq and w.telemetry.num_running >= 1
            async with s.post(
                f"{url}/generate", json={"input_ids": turn2, "sampling_params": {"max_new_tokens": 8}}
            ) as r:
                assert r.status == 200
                route = r.headers["x-ppd-route"]
        assert route == "local", dict(router.metrics.route_decisions)
    finally:
        await runner.cleanup()
