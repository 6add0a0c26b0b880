"""Router overhead in front of 1P1D null workers: added latency, max throughput, live decision time.

    python benchmarks/router_bench.py [--seed 0] [--requests 300] [--duration-s 10] [--concurrency 32]
        [--rounds 3] [--rust-router-python /path/to/venv/bin/python]

Starts one prefill and one decode *null worker* (this script with ``--null-worker``: an aiohttp
server that speaks the SGLang subset a router needs and answers ``/generate`` at once, with no
bootstrap wait), so what is measured is the router itself plus HTTP. Then, for each router under
test (sglang_ppd with ``pd`` and with ``ppd_deflect``; sglang_router's Rust PD
router when ``--rust-router-python`` names a Python that has ``sglang-router`` installed):

All routers stay up side by side and ``--rounds`` rounds run every target in a rotated order, so
load drift on a shared machine hits all of them alike; each figure is the median over rounds.

1. sequential latency: ``--requests`` non-streaming ``/generate`` calls (64-byte prompt, 8 new
   tokens), one at a time; p50/p99 end-to-end;
2. max throughput: ``--concurrency`` closed-loop clients for ``--duration-s``; requests/s;
3. CPU per request: the router process's user+system CPU time (``/proc/<pid>/stat``) over both
   phases divided by the requests served: the figure least disturbed by other load on the machine.

The reference floor is the decode null worker called directly (no router, no P hop).

Then (``--live-sessions`` > 0) a live phase: ``ppd_deflect`` in front of an emulated 2P2D cluster
(``sglang-ppd emulate --time-scale 0``, page size 1, KV events and telemetry live), driven by
closed-loop multi-turn sessions (``--live-prompt-len`` byte first turns, ``--live-turns`` turns,
each appending the answer and a new user message), so decisions see real hit lengths and fresh
snapshots; its decision and prefix-lookup times and route mix come from the router's ``/stats``.
Decision time is read from the live sglang_ppd router itself: ``/stats`` (exact p50/p99 over its
last 2048 decisions) and the ``sglang_ppd_decision_seconds`` histogram on ``/metrics``.
Everything shares this machine's cores (load generator included): compare rows, not absolutes.
Writes ``benchmarks/results/router_bench.json`` with machine, CPU, date and seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from procstat import cpu_s

from sglang_ppd.bench.ports import free_port
from sglang_ppd.metrics.result import cpu_model

RESULTS = Path(__file__).resolve().parent / "results" / "router_bench.json"
REPLY = (
    b'{"text":"abcdefgh","output_ids":[97,98,99,100,101,102,103,104],"meta_info":{"id":"x",'
    b'"finish_reason":{"type":"length","length":8},"prompt_tokens":64,"completion_tokens":8}}'
)


def null_worker(role: str, port: int) -> None:
    """A worker that answers instantly: the router's cost is all that is left to measure."""
    from aiohttp import web

    info = {
        "disaggregation_mode": role,
        "page_size": 1,
        "served_model_name": "null",
        "model_path": "null",
        "kv_events": None,
        "ppd_local_prefill": role == "decode",
    }

    async def generate(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    async def server_info(_: web.Request) -> web.Response:
        return web.json_response(info)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/get_server_info", server_info)
    app.router.add_get("/get_model_info", server_info)
    app.router.add_post("/abort_request", ok)
    for path in ("/health", "/health_generate", "/v1/loads", "/get_load"):
        app.router.add_get(path, ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True
    )


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{url}: process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with s.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not healthy after {timeout_s} s")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def body(rng: random.Random, local: bool) -> dict[str, Any]:
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(64))
    b: dict[str, Any] = {"text": text, "sampling_params": {"max_new_tokens": 8, "ignore_eos": True}}
    if local:
        b["do_local_prefill"] = True
    return b


async def latency(url: str, n: int, seed: int, local: bool) -> dict[str, float]:
    rng = random.Random(seed)
    times = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 20):
            t0 = time.perf_counter()
            async with s.post(f"{url}/generate", json=body(rng, local)) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
            if i >= 20:  # warm-up excluded
                times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(0.99 * (len(times) - 1))],
        "mean_ms": statistics.fmean(times),
    }


async def throughput(
    url: str, duration_s: float, concurrency: int, seed: int, local: bool
) -> dict[str, float]:
    done = errors = 0
    deadline = time.monotonic() + duration_s

    async def client(k: int) -> None:
        nonlocal done, errors
        rng = random.Random(seed * 1000 + k)
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                async with s.post(f"{url}/generate", json=body(rng, local)) as r:
                    await r.read()
                    done += r.status == 200
                    errors += r.status != 200

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return {"rps": done / (time.monotonic() - t0), "ok": done, "errors": errors}


def _median_row(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric median over rounds (rounds interleave the targets, so load drift hits all alike)."""
    lat = {k: statistics.median(x["latency"][k] for x in samples) for k in samples[0]["latency"]}
    thr = {k: statistics.median(x["throughput"][k] for x in samples) for k in ("rps", "ok", "errors")}
    cpu = statistics.median(x["cpu_ms_per_request"] for x in samples)
    return {"latency": lat, "throughput": thr, "cpu_ms_per_request": cpu, "rounds": samples}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    pport, bport, dport = free_port(), free_port(), free_port()
    p = await spawn(py, __file__, "--null-worker", "prefill", str(pport))
    d = await spawn(py, __file__, "--null-worker", "decode", str(dport))
    purl, durl = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{dport}"
    ours = [f"sglang_ppd router, policy {pol}" for pol in ("pd", "ppd_deflect")]
    commands: dict[str, list[str]] = {
        name: [
            py,
            "-m",
            "sglang_ppd.cli",
            "router",
            "--prefill",
            purl,
            str(bport),
            "--decode",
            durl,
            "--policy",
            pol,
            "--log-level",
            "warning",
        ]
        for name, pol in zip(ours, ("pd", "ppd_deflect"), strict=True)
    }
    if args.rust_router_python:
        commands["sglang_router (Rust) --pd-disaggregation"] = [
            args.rust_router_python,
            "-m",
            "sglang_router.launch_router",
            "--pd-disaggregation",
            "--prefill",
            purl,
            str(bport),
            "--decode",
            durl,
            "--host",
            "127.0.0.1",
            "--log-level",
            "warn",
        ]
    direct = "decode null worker alone (no router)"
    urls: dict[str, str] = {direct: durl}
    pids: dict[str, int] = {direct: d.pid}
    procs: list[asyncio.subprocess.Process] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, Any] = {}
    try:
        await wait_healthy(purl, p)
        await wait_healthy(durl, d)
        for name, argv in commands.items():
            port = free_port()
            proc = await spawn(*argv, "--port", str(port))
            procs.append(proc)
            urls[name] = f"http://127.0.0.1:{port}"
            pids[name] = proc.pid
            await wait_healthy(urls[name], proc)
        names = list(urls)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                local = name == direct
                cpu0 = cpu_s(pids[name])
                lat = await latency(urls[name], args.requests, args.seed + r, local)
                thr = await throughput(urls[name], args.duration_s, args.concurrency, args.seed + r, local)
                num = args.requests + 20 + thr["ok"] + thr["errors"]
                samples.setdefault(name, []).append(
                    {
                        "latency": lat,
                        "throughput": thr,
                        "cpu_ms_per_request": 1000 * (cpu_s(pids[name]) - cpu0) / num,
                    }
                )
        for name in names:
            rows[name] = _median_row(samples[name])
        async with aiohttp.ClientSession() as s:
            for name in ours:
                async with s.get(f"{urls[name]}/stats") as resp:
                    stats = await resp.json()
                async with s.get(f"{urls[name]}/metrics") as resp:
                    metrics = await resp.text()
                rows[name]["decision_ms"] = stats["decision_ms"]
                rows[name]["prefix_lookup_ms"] = stats.get("prefix_lookup_ms")
                rows[name]["routes"] = stats["routes"]
                rows[name]["decision_histogram"] = [
                    ln for ln in metrics.splitlines() if ln.startswith("sglang_ppd_decision_seconds")
                ]
    finally:
        for proc in procs:
            await stop(proc)
        await stop(p)
        await stop(d)
    return rows


async def live_decisions(args: argparse.Namespace) -> dict[str, Any]:
    """ppd_deflect in front of an emulated 2P2D cluster (time scale 0, page size 1, KV events and
    telemetry live) under a multi-turn workload: decision and prefix-lookup time as the router
    itself reports them, with real hit lengths and fresh snapshots."""
    py = sys.executable
    procs: list[asyncio.subprocess.Process] = []
    workers: list[str] = []
    try:
        for role in ("prefill", "prefill", "decode", "decode"):
            port = free_port()
            extra = ["--bootstrap-port", str(free_port())] if role == "prefill" else ["--ppd"]
            proc = await spawn(
                py,
                "-m",
                "sglang_ppd.cli",
                "emulate",
                "--role",
                role,
                "--port",
                str(port),
                "--time-scale",
                "0",
                *extra,
            )
            procs.append(proc)
            workers += (
                ["--prefill", f"http://127.0.0.1:{port}"]
                if role == "prefill"
                else ["--decode", f"http://127.0.0.1:{port}"]
            )
            await wait_healthy(f"http://127.0.0.1:{port}", proc)
        rport = free_port()
        router = await spawn(
            py,
            "-m",
            "sglang_ppd.cli",
            "router",
            *workers,
            "--port",
            str(rport),
            "--policy",
            "ppd_deflect",
            "--log-level",
            "warning",
        )
        procs.append(router)
        url = f"http://127.0.0.1:{rport}"
        await wait_healthy(url, router)
        await asyncio.sleep(1.0)  # first telemetry and KV-event subscriptions

        async def session(k: int) -> None:
            rng = random.Random(args.seed * 7919 + k)
            history = "".join(rng.choice("abcdefghij ") for _ in range(args.live_prompt_len))
            async with aiohttp.ClientSession() as s:
                for turn in range(1, args.live_turns + 1):
                    history += f" user turn {turn}: " + "".join(rng.choice("klmnop ") for _ in range(64))
                    headers = {"x-ppd-session-id": f"s{k}", "x-ppd-turn": str(turn)}
                    body = {"text": history, "stream": True, "sampling_params": {"max_new_tokens": 32}}
                    async with s.post(f"{url}/generate", json=body, headers=headers) as r:
                        last = b""
                        async for line in r.content:
                            if line.startswith(b"data: {"):
                                last = line
                    history += json.loads(last[6:])["text"]

        await asyncio.gather(*(session(k) for k in range(args.live_sessions)))
        async with aiohttp.ClientSession() as s, s.get(f"{url}/stats") as r:
            stats = await r.json()
        return {k: stats[k] for k in ("decision_ms", "prefix_lookup_ms", "routes", "top_reasons", "latency")}
    finally:
        for proc in procs:
            await stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--live-sessions", type=int, default=16, help="0 skips the emulated 2P2D phase")
    ap.add_argument("--live-turns", type=int, default=4)
    ap.add_argument("--live-prompt-len", type=int, default=2000, help="first-turn prompt bytes (= tokens)")
    ap.add_argument("--rust-router-python", default=None)
    ap.add_argument("--null-worker", nargs=2, metavar=("ROLE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.null_worker:
        null_worker(args.null_worker[0], int(args.null_worker[1]))
        return 0
    load_before = os.getloadavg()
    rows = asyncio.run(run(args))
    live = asyncio.run(live_decisions(args)) if args.live_sessions > 0 else None
    out = {
        "benchmark": "router_bench",
        "machine": platform.node(),
        "cpu": cpu_model(),
        "num_cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "seed": args.seed,
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "args": vars(args),
        "rows": rows,
        "live_2p2d_ppd_deflect": live,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in rows.items():
        lat, thr = row["latency"], row["throughput"]
        dec = row.get("decision_ms")
        extra = f"  decision p50 {dec['p50']:.3f} ms p99 {dec['p99']:.3f} ms" if dec else ""
        print(
            f"{name:44s} cpu {row['cpu_ms_per_request']:5.2f} ms/req  "
            f"p50 {lat['p50_ms']:6.2f} ms  p99 {lat['p99_ms']:6.2f} ms  "
            f"{thr['rps']:7.1f} req/s ({thr['errors']} errors){extra}"
        )
    if live is not None:
        dec, look = live["decision_ms"], live["prefix_lookup_ms"]
        print(
            f"live 2P2D ppd_deflect: decision p50 {dec['p50']:.3f} ms p99 {dec['p99']:.3f} ms; prefix lookup "
            f"p50 {look['p50']:.3f} ms p99 {look['p99']:.3f} ms; routes {live['routes']}"
        )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
