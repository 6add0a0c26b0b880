"""``sglang-ppd router --processes N``: counters summed over the processes whichever answers, and a
killed process that comes back rebuilds the prefix index from the workers' KV-event replay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from test_router_support import free_port, stop_process, wait_until_healthy

from sglang_ppd.router.metrics import RouterMetrics
from sglang_ppd.router.metrics_state import merge_metrics, metrics_state

pytestmark = pytest.mark.timeout(90)


def _events(m: RouterMetrics, n: int, offset: int) -> None:
    for i in range(n):
        m.count_decision("pd" if i % 3 else "local", f"r{(i + offset) % 4}")
        m.requests[("generate", 200 if i % 5 else 503)] += 1
        m.upstream_errors["http://w"] += i % 2
        m.retries += 1
        m.kv_bytes_transferred += 100 * i
        m.record_finish("1" if i % 2 else "2+", 0.01 * (i + offset), 0.002 * i or None, 0.5, 0.05)
        m.decision.observe(1e-5 * (i + 1))


def _samples(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines() if not ln.startswith("#"))}


def test_merged_counters_equal_one_router_that_saw_everything() -> None:
    a, b, both = RouterMetrics(), RouterMetrics(), RouterMetrics()
    _events(a, 40, 0)
    _events(b, 25, 7)
    _events(both, 40, 0)
    _events(both, 25, 7)
    merged = merge_metrics([metrics_state(a), metrics_state(b)])
    want = _samples(both.render([]))
    assert _samples(merged.render([])) == pytest.approx(want)  # sums of floats: in another order
    assert want["sglang_ppd_retries_total"] == 65
    assert sorted(merged.decision.recent) == sorted(both.decision.recent)


@pytest.mark.parametrize(
    "poison",
    [
        lambda s: s.update(retries=-1),
        lambda s: s.update(retries=True),
        lambda s: s["requests"].append(["generate", 200, "many"]),
        lambda s: s["histograms"]["decision"].update(counts=[1, 2]),
        lambda s: s["histograms"]["decision"].update(sum=float("nan")),
        lambda s: s.pop("route_decisions"),
    ],
)
def test_a_malformed_peer_state_is_refused_whole(poison: Any) -> None:
    good, bad = RouterMetrics(), RouterMetrics()
    _events(good, 10, 0)
    _events(bad, 10, 0)
    state = metrics_state(bad)
    poison(state)
    with pytest.raises(ValueError):
        merge_metrics([metrics_state(good), state])


@contextlib.asynccontextmanager
async def _group(emulated_worker: Callable[..., Any], n: int) -> AsyncIterator[str]:
    """``sglang-ppd router --processes n`` over an emulated 1P1D cluster (``emulated_worker`` is the
    conftest fixture)."""
    p = emulated_worker("prefill", time_scale=0.0)
    d = emulated_worker("decode", "--ppd", time_scale=0.0)
    purl, bport, durl = p.url, p.bootstrap_port, d.url
    try:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sglang_ppd.cli", "router", "--prefill", purl, str(bport),
            "--decode", durl, "--port", str(port), "--processes", str(n), "--log-level", "warning",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_until_healthy(url, proc)
            yield url
        finally:
            assert await stop_process(proc) == 0
    finally:
        p.stop()
        d.stop()


async def _generate(url: str, text: str) -> None:
    # A new connection each time, so the kernel spreads the requests over the processes.
    async with aiohttp.ClientSession() as s:
        body = {"text": text, "sampling_params": {"max_new_tokens": 3}}
        async with s.post(f"{url}/generate", json=body) as r:
            assert r.status == 200, await r.text()
            await r.read()


async def _get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"{url}{path}") as r:
        assert r.status == 200
        return await r.json() if path == "/stats" else await r.text()


def _counter(text: str, line_prefix: str) -> int:
    m = re.search(rf"^{re.escape(line_prefix)} (\d+)$", text, re.M)
    assert m, f"{line_prefix} not in /metrics"
    return int(m.group(1))


async def _all_up(url: str, n: int) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for _ in range(200):
        stats = await _get(url, "/stats")
        if len(stats["processes"]) == n and stats["num_processes_unreachable"] == 0:
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes never all up: {stats.get('processes')}")


@pytest.mark.slow
async def test_metrics_and_stats_sum_over_processes_whichever_answers(emulated_worker: Any) -> None:
    async with _group(emulated_worker, 2) as url:
        await _all_up(url, 2)
        for i in range(30):
            await _generate(url, f"prompt number {i} " * 4)
        for _ in range(6):  # new connections: several scrapes land on each process
            text = await _get(url, "/metrics")
            assert _counter(text, 'sglang_ppd_requests_total{endpoint="generate",status="200"}') == 30
            assert _counter(text, 'sglang_ppd_router_processes{state="up"}') == 2
            decisions = re.findall(r"^sglang_ppd_route_decisions_total\{.*\} (\d+)$", text, re.M)
            assert sum(int(n) for n in decisions) == 30
        stats = await _all_up(url, 2)
        per_process = [p["requests_total"] for p in stats["processes"]]
        assert stats["requests"]["total"] == sum(per_process) == 30
        assert all(n > 0 for n in per_process), per_process  # the kernel used both
        assert stats["latency"]["turn1"]["count"] + stats["latency"]["turn2+"]["count"] == 0  # not streamed
        assert sum(stats["routes"].values()) == 30


@pytest.mark.slow
async def test_a_killed_process_comes_back_with_the_prefix_index_by_replay(emulated_worker: Any) -> None:
    async with _group(emulated_worker, 2) as url:
        await _all_up(url, 2)
        for i in range(6):
            await _generate(url, f"a long shared system prompt, then question {i} " * 8)
        before = await _all_up(url, 2)
        blocks_before = before["processes"][0]["indexed_blocks"]
        assert all(n > 0 for n in blocks_before.values())
        victim = before["processes"][1]["pid"]
        os.kill(victim, signal.SIGKILL)

        stats: dict[str, Any] = {}

        async def rejoined() -> bool:
            nonlocal stats
            stats = await _get(url, "/stats")
            procs = stats["processes"]
            return len(procs) == 2 and procs[1]["pid"] != victim and stats["num_processes_unreachable"] == 0

        for _ in range(200):
            if await rejoined():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"process 1 did not come back: {stats}")
        await _generate(url, "one new prompt after the restart")  # the first event triggers the replay

        async def same_index() -> bool:
            nonlocal stats
            stats = await _get(url, "/stats")
            a, b = (p["indexed_blocks"] for p in stats["processes"])
            return a == b

        for _ in range(200):
            if await same_index():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"indexes differ: {stats['processes']}")
        after = stats["processes"][1]["indexed_blocks"]
        assert all(after[u] > n for u, n in blocks_before.items())  # old blocks (replayed) + new ones

