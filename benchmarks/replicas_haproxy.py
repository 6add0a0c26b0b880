"""Router replicas behind HAProxy: SIGKILL one under load, count what every client saw, time its rejoin.

    python benchmarks/replicas_haproxy.py [--replicas 3] [--clients 8] [--duration-s 30] \\
        [--kill-at-s 10] [--restart-at-s 14] [--time-scale 1] [--seed 0]

An emulated 1P2D cluster (``h100-llama31-8b``, real time), ``--replicas`` independent
``sglang-ppd router`` processes (each one would be a host; here all on loopback) and HAProxy from
Debian's package in front (``haproxy`` on PATH; config: ``haproxy_cfg`` below, the production
recipe of ``benchmarks/replicas.md``). ``--clients`` closed-loop clients stream ``/generate`` with a
shared system prompt. At ``--kill-at-s`` replica 1 is SIGKILLed; at ``--restart-at-s`` it is
started again on its port. Every request is classified by what its client saw:

- ``ok``: a 200 stream that ended with ``[DONE]``;
- ``failed_before_start``: no reply head (a connection error, or HAProxy's own 5xx): a request
  that had not started anywhere, so it must never fail (HAProxy retries connection failures);
- ``cut``: the head came (with ``X-Replica``, the replica that served it) but the stream broke off
  or ended with an error event: allowed only on the killed replica, and it must end, not hang;
- ``hung``: no end within ``--request-timeout-s``.

Rejoin: the restarted replica's time to ``/health`` 200, to HAProxy sending it requests again, and
to a prefix index holding at least what replica 0's held when the restart began (for every worker;
only the workers' KV-event replay can give it that), and whether every replica's index is the same
once the load stops. Writes ``benchmarks/results/replicas_haproxy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from reliability_cluster import PROFILE, Worker, spawn_worker, stop_worker, worker_spec

from sglang_ppd.bench.ports import free_port
from sglang_ppd.metrics.result import write_result_json

RESULT = Path(__file__).parent / "results" / "replicas_haproxy.json"
SYSTEM = "You are a helpful assistant that answers from the attached manual. " * 30


def haproxy_cfg(port: int, replicas: list[int]) -> str:
    """The recipe: health checks on /health, connection failures (and replies that never came)
    retried on another replica, long-lived streams balanced by open connections."""
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(replicas))
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout http-request 10s

frontend llm
    bind 127.0.0.1:{port}
    default_backend routers

backend routers
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    http-response set-header X-Replica %[srv_name]
{servers}
"""


async def start_router(port: int, workers: list[Worker]) -> asyncio.subprocess.Process:
    args = ["router", "--port", str(port), "--policy", "ppd_deflect", "--profile", PROFILE,
            "--log-level", "error"]  # fmt: skip
    for w in workers:
        spec = worker_spec(w)
        if w.role == "prefill":
            args += ["--prefill", spec["url"], str(spec["bootstrap_port"])]
        else:
            args += ["--decode", spec["url"]]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sglang_ppd.cli", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def get_json(s: aiohttp.ClientSession, url: str) -> Any | None:
    try:
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
            return await r.json() if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


async def wait_healthy(s: aiohttp.ClientSession, url: str, timeout_s: float = 30.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await get_json(s, f"{url}/health") is not None:
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{url} never became healthy")


async def one(
    s: aiohttp.ClientSession, url: str, text: str, max_new: int, timeout_s: float
) -> dict[str, Any]:
    body = {"text": text, "stream": True, "sampling_params": {"max_new_tokens": max_new}}
    rec: dict[str, Any] = {"start_s": time.monotonic(), "replica": None}

    async def request() -> str:
        async with s.post(f"{url}/generate", json=body) as r:
            rec["replica"] = r.headers.get("X-Replica")
            if r.status != 200:
                await r.read()
                rec["status"] = r.status
                return "failed_before_start"
            done = error = False
            try:
                async for raw in r.content:
                    line = raw.strip()
                    if line == b"data: [DONE]":
                        done = True
                    elif line.startswith(b"data:") and b'"error"' in line:
                        error = True
            except (aiohttp.ClientError, ConnectionError):
                return "cut"
            return "ok" if done and not error else "cut"

    try:
        rec["outcome"] = await asyncio.wait_for(request(), timeout_s)
    except asyncio.TimeoutError:
        rec["outcome"] = "hung"
    except (aiohttp.ClientError, ConnectionError):
        rec["outcome"] = "failed_before_start"
    rec["end_s"] = time.monotonic()
    return rec


async def clients(
    url: str, n: int, until_s: float, max_new: int, timeout_s: float, seed: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []

    async def loop(c: int) -> None:
        async with aiohttp.ClientSession() as s:
            i = 0
            while time.monotonic() < until_s:
                words = " ".join(str(rng.randrange(10_000)) for _ in range(40))
                question = f"client {c} question {i}: {words}"
                records.append(await one(s, url, SYSTEM + question, max_new, timeout_s))
                i += 1

    await asyncio.gather(*(loop(c) for c in range(n)))
    return records


async def rejoin(s: aiohttp.ClientSession, urls: list[str], victim: int, front: str) -> dict[str, Any]:
    """Times from the restart: /health, first request HAProxy sends it, index >= replica 0's at restart."""
    t0 = time.monotonic()
    ref = await get_json(s, f"{urls[0]}/stats")
    target = {w["url"]: w["indexed_blocks"] for w in ref["workers"]} if ref else {}
    out: dict[str, Any] = {"replica0_blocks_at_restart": target}
    out["health_s"] = await wait_healthy(s, urls[victim])
    index_s = None
    while time.monotonic() - t0 < 30.0 and index_s is None:
        stats = await get_json(s, f"{urls[victim]}/stats")
        if stats and all(w["indexed_blocks"] >= target.get(w["url"], 0) for w in stats["workers"]):
            index_s = time.monotonic() - t0
            out["blocks_when_reached"] = {w["url"]: w["indexed_blocks"] for w in stats["workers"]}
        await asyncio.sleep(0.02)
    out["index_s"] = index_s
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("haproxy is not on PATH (Debian: apt-get install -y haproxy)")
    roles = ["prefill"] + ["decode"] * 2
    workers = list(await asyncio.gather(*(spawn_worker(r, args.time_scale) for r in roles)))
    ports = [free_port() for _ in range(args.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    routers = [await start_router(p, workers) for p in ports]
    tmp = Path(tempfile.mkdtemp(prefix="haproxy-"))
    front_port = free_port()
    (tmp / "haproxy.cfg").write_text(haproxy_cfg(front_port, ports))
    lb = await asyncio.create_subprocess_exec(
        haproxy, "-db", "-f", str(tmp / "haproxy.cfg"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    front = f"http://127.0.0.1:{front_port}"
    try:
        async with aiohttp.ClientSession() as s:
            for u in [*urls, front]:
                await wait_healthy(s, u)
            await asyncio.sleep(1.5)  # HAProxy's first checks (rise 2 x 500 ms) mark every replica up
            t0 = time.monotonic()
            load = asyncio.create_task(clients(front, args.clients, t0 + args.duration_s, args.max_new_tokens,
                                               args.request_timeout_s, args.seed))  # fmt: skip
            await asyncio.sleep(args.kill_at_s)
            routers[1].send_signal(signal.SIGKILL)
            kill_s = time.monotonic()
            await routers[1].wait()
            await asyncio.sleep(max(0.0, t0 + args.restart_at_s - time.monotonic()))
            restart_s = time.monotonic()
            routers[1] = await start_router(ports[1], workers)
            back = await rejoin(s, urls, 1, front)
            records = await load
            await asyncio.sleep(2.0)  # the last KV events reach every replica
            final = [await get_json(s, f"{u}/stats") for u in urls]
    finally:
        lb.send_signal(signal.SIGTERM)
        await lb.wait()
        for proc in routers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        await asyncio.gather(*(stop_worker(w) for w in workers))
        shutil.rmtree(tmp, ignore_errors=True)
    served_again = [
        r["start_s"] - restart_s for r in records if r["replica"] == "r1" and r["start_s"] > restart_s
    ]
    back["first_request_after_restart_s"] = min(served_again) if served_again else None
    indexes = [{w["url"]: w["indexed_blocks"] for w in f["workers"]} if f else None for f in final]
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        by = counts.setdefault(r["outcome"], {})
        key = r["replica"] or "none"
        by[key] = by.get(key, 0) + 1
    not_started_failed = sum(counts.get("failed_before_start", {}).values())
    cut_elsewhere = sum(n for rep, n in counts.get("cut", {}).items() if rep != "r1")
    cut_on_victim = [r for r in records if r["outcome"] == "cut" and r["replica"] == "r1"]
    return {
        "replicas": args.replicas, "clients": args.clients, "duration_s": args.duration_s,
        "kill_at_s": args.kill_at_s, "restart_at_s": args.restart_at_s, "time_scale": args.time_scale,
        "max_new_tokens": args.max_new_tokens, "seed": args.seed, "cluster": "1P2D emulated",
        "haproxy": haproxy_cfg(front_port, ports),
        "num_requests": len(records), "outcomes": counts,
        "cut_streams_end_after_kill_s": [round(r["end_s"] - kill_s, 3) for r in cut_on_victim],
        "rejoin": back, "final_indexed_blocks": indexes,
        "claims": {
            "failed_not_started_on_killed": not_started_failed + cut_elsewhere,
            "hung": sum(counts.get("hung", {}).values()),
            "same_index_after_load": len({str(i) for i in indexes}) == 1 and indexes[0] is not None,
        },
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--kill-at-s", type=float, default=10.0)
    ap.add_argument("--restart-at-s", type=float, default=14.0)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--request-timeout-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.replicas < 2:
        raise SystemExit("--replicas must be >= 2 (replica 1 is killed)")
    out = asyncio.run(run(args))
    keys = ("num_requests", "outcomes", "cut_streams_end_after_kill_s", "rejoin", "claims")
    print({k: out[k] for k in keys})
    out["command"] = " ".join(["python benchmarks/replicas_haproxy.py", *sys.argv[1:]])
    write_result_json(RESULT, out)


if __name__ == "__main__":
    main()
