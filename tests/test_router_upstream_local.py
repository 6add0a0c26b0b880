"""A stock decode server with upstream's conditional aggregation (SGLang draft PR #34773): detected
from ``/server_info`` and sent ``do_local_prefill`` appends without sglang_ppd's worker-extension
fields. The decode server is the emulator in ``--conditional-agg`` mode, which refuses those fields."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import PairConfig
from test_router_support import PROFILE, ScriptedPolicy, free_port, stop_process, wait_for, wait_until_healthy

from sglang_ppd.core.types import RouteKind
from sglang_ppd.protocol import fields
from sglang_ppd.protocol.server_info import UPSTREAM_LOCAL_PREFILL_FIELD, parse_server_info
from sglang_ppd.router.app import start_server
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer

URL = "http://10.0.0.5:30002"


def test_server_info_tells_upstream_local_prefill_from_the_extension() -> None:
    stock = parse_server_info({"disaggregation_mode": "decode", UPSTREAM_LOCAL_PREFILL_FIELD: True}, URL)
    assert stock.supports_local_prefill and stock.upstream_local_prefill
    # Our extension on a release that also has the flag: the extension's fields apply.
    both = parse_server_info(
        {"disaggregation_mode": "decode", UPSTREAM_LOCAL_PREFILL_FIELD: True, "ppd_local_prefill": True}, URL
    )
    assert both.supports_local_prefill and not both.upstream_local_prefill
    for body in (
        {"disaggregation_mode": "decode", UPSTREAM_LOCAL_PREFILL_FIELD: False},
        {"disaggregation_mode": "decode", UPSTREAM_LOCAL_PREFILL_FIELD: "true"},
        {"disaggregation_mode": "prefill", UPSTREAM_LOCAL_PREFILL_FIELD: True},
        {"disaggregation_mode": "decode"},
    ):
        info = parse_server_info(body, URL)
        assert not info.supports_local_prefill and not info.upstream_local_prefill, body


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sglang_ppd.cli", "emulate", *args, "--time-scale", "0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
async def stock_conditional_agg() -> AsyncIterator[tuple[str, int, str]]:
    pport, bport, dport = free_port(), free_port(), free_port()
    p = await _spawn("--role", "prefill", "--port", str(pport), "--bootstrap-port", str(bport))
    d = await _spawn("--role", "decode", "--port", str(dport), "--conditional-agg")
    purl, durl = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{dport}"
    try:
        await wait_until_healthy(purl, p)
        await wait_until_healthy(durl, d)
        yield purl, bport, durl
    finally:
        await stop_process(p)
        await stop_process(d)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_stock_conditional_agg_server_gets_do_local_prefill_alone(
    stock_conditional_agg: tuple[str, int, str], pair_config: PairConfig
) -> None:
    durl = stock_conditional_agg[2]
    body = {"input_ids": list(range(1, 200)), "sampling_params": {"max_new_tokens": 6}}
    async with aiohttp.ClientSession() as s:
        # The emulated stock server refuses this project's fields, as the test below relies on.
        extension = {**body, fields.LOCAL_PREFILL: True, fields.ROUTE_KIND: "local"}
        async with s.post(f"{durl}/generate", json=extension) as r:
            assert r.status == 400 and fields.ROUTE_KIND in await r.text()
    # Staleness is not under test.
    cfg = pair_config(stock_conditional_agg, slo={"max_telemetry_age_ms": 60_000.0})
    policy = ScriptedPolicy()
    policy.force = RouteKind.LOCAL
    router = Router(cfg, policy, PROFILE, ByteTokenizer(), "scripted")
    runner, port = await start_server(router, "127.0.0.1", 0)
    try:
        w = router.registry.get(durl)
        assert w is not None and w.info is not None
        assert w.supports_local_prefill and w.info.upstream_local_prefill
        assert w.info.telemetry_endpoint is None
        # Its load comes from SGLang's own LoadStat (no WorkerTelemetry): the local guard needs it.
        await wait_for(lambda: w.age_ms(time.monotonic()) is not None, timeout_s=60.0)
        assert w.telemetry_source == "loadstat"
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/generate", json=body) as r:
            assert r.status == 200, await r.text()
            assert r.headers["x-ppd-route"] == "local"
            assert (await r.json())["meta_info"]["completion_tokens"] == 6
    finally:
        await runner.cleanup()
