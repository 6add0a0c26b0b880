"""Before/after in one run: the sglang_ppd router at an older commit vs this checkout vs the Rust
sglang_router, side by side in front of the same null workers (``router_bench.py --null-worker``).

    python benchmarks/router_ab.py --old-commit b715fe1 [--rust-router-python /tmp/rustvenv/bin/python]
        [--rounds 3] [--requests 300] [--duration-s 4] [--concurrency 32] [--seed 0]

The old commit's ``sglang_ppd`` is exported with ``git archive`` to a temporary folder and run from
there (``PYTHONPATH``); policies come from the installed entry points. Each round runs every target
in a rotated order: ``--requests`` sequential non-streaming ``/generate`` calls (p50/p99), then
``--concurrency`` closed-loop clients for ``--duration-s`` (req/s), with the router's CPU per request
from ``/proc/PID/stat`` over both. Medians over rounds. Policy ``pd`` (PD hand-off on every request).
Writes ``benchmarks/results/router_ab.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from procstat import cpu_s

from sglang_ppd.bench.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "router_bench.py"


async def wait_up(url: str, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            try:
                async with s.post(
                    f"{url}/generate", json={"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 1}}
                ) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


async def measure(url: str, pid: int, n: int, conc: int, dur: float, rng: random.Random) -> dict[str, Any]:
    body = {"input_ids": [rng.randrange(1000) for _ in range(64)], "sampling_params": {"max_new_tokens": 8}}
    lat: list[float] = []
    c0 = cpu_s(pid)
    done = 0
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t = time.perf_counter()
            async with s.post(f"{url}/generate", json=body) as r:
                await r.read()
            lat.append(time.perf_counter() - t)
            done += 1
        end = time.monotonic() + dur
        count = 0

        async def client() -> None:
            nonlocal count
            while time.monotonic() < end:
                async with s.post(f"{url}/generate", json=body) as r:
                    await r.read()
                count += 1

        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(conc)))
        rps = count / (time.monotonic() - t0)
    lat.sort()
    return {
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "rps": rps,
        "cpu_ms_per_req": 1000 * (cpu_s(pid) - c0) / (done + count),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    old = Path(tempfile.mkdtemp(prefix="router_ab_"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.old_commit, "sglang_ppd", "configs"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    pport, dport, bport = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH), "--null-worker", role, str(port)], start_new_session=True
        )
        for role, port in (("prefill", pport), ("decode", dport))
    ]
    upstream = ["--prefill", f"http://127.0.0.1:{pport}", str(bport), "--decode", f"http://127.0.0.1:{dport}"]
    # The same command for both checkouts: PYTHONPATH and cwd pick which sglang_ppd runs.
    pd_router = [sys.executable, "-m", "sglang_ppd.cli", "router", *upstream, "--policy", "pd"]
    pd_router += ["--log-level", "warning"]
    targets: dict[str, tuple[list[str], dict[str, str], str]] = {
        f"sglang_ppd pd @ {args.old_commit}": (
            pd_router,
            {**os.environ, "PYTHONPATH": str(old)},
            str(old),
        ),
        "sglang_ppd pd @ this checkout": (
            pd_router,
            dict(os.environ),
            str(ROOT),
        ),
    }
    if args.rust_router_python:
        targets["sglang_router (Rust) --pd-disaggregation"] = (
            [
                args.rust_router_python,
                "-m",
                "sglang_router.launch_router",
                "--pd-disaggregation",
                *upstream,
                "--host",
                "127.0.0.1",
                "--log-level",
                "warn",
                "--prometheus-port",
                str(free_port()),
            ],
            dict(os.environ),
            "/tmp",
        )
    urls: dict[str, tuple[str, int]] = {}
    try:
        await asyncio.sleep(2)
        for name, (argv, env, cwd) in targets.items():
            port = free_port()
            p = subprocess.Popen(
                [*argv, "--port", str(port)],
                env=env,
                cwd=cwd,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=open(f"{tempfile.gettempdir()}/router_ab_{len(procs)}.log", "w"),  # noqa: SIM115
            )
            procs.append(p)
            urls[name] = (f"http://127.0.0.1:{port}", p.pid)
        for url, _ in urls.values():
            await wait_up(url)
        rng = random.Random(args.seed)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        names = list(urls)
        for rnd in range(args.rounds):
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                url, pid = urls[name]
                r = await measure(url, pid, args.requests, args.concurrency, args.duration_s, rng)
                print(
                    f"round {rnd} {name:45s} p50 {r['p50_ms']:.2f} ms  {r['rps']:.0f} req/s  "
                    f"cpu {r['cpu_ms_per_req']:.3f} ms/req",
                    flush=True,
                )
                results[name].append(r)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    rows = {
        name: {
            k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_req")
        }
        for name, runs in results.items()
    }
    return {"rows": rows, "runs": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-commit", required=True)
    ap.add_argument("--rust-router-python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--duration-s", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = asyncio.run(run(args))
    result = {
        "benchmark": "router_ab",
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "machine": {
            "hostname": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "loadavg": os.getloadavg(),
        **out,
    }
    path = ROOT / "benchmarks" / "results" / "router_ab.json"
    path.write_text(json.dumps(result, indent=1))
    for name, r in out["rows"].items():
        print(
            f"{name:45s} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms {r['rps']:.0f} req/s "
            f"cpu {r['cpu_ms_per_req']:.3f} ms/req"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
