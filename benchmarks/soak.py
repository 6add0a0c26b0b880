"""A bounded soak. The router runs for ``--duration-s`` (default 30 min) at ``--load``
(default 80 %) of the emulated cluster's measured capacity; its RSS must grow by < 5 % and no request
may be stuck. Not run by the tests.

    python benchmarks/soak.py [--duration-s 1800] [--load 0.8] [--capacity-rps R] [--seed 0]

- Cluster: emulated 1P2D (``sglang-ppd emulate``, real time, ``h100-llama31-8b``) and the router
  as its own process (``sglang-ppd router --policy ppd_deflect``), so its RSS is the router's alone.
- Capacity: unless ``--capacity-rps`` is given, measured first: closed-loop sessions with
  ``--calib-concurrency`` in flight for ``--calib-s``; capacity = completed requests per second.
  On a 2-core machine this includes the CPU cost of the emulators, router and client.
- Soak: multi-turn sessions (4 turns) arriving at ``load * capacity / 4`` sessions per second.
- RSS: ``VmRSS`` of the router every ``--sample-s``, next to the size of what it mirrors: the blocks
  each worker's prefix index holds and the unique blocks of the shared block table (``/stats``).
  Growth = median of the last three samples over the median of the first three once the warm-up is
  over: ``--warmup-s`` has passed *and* the mirror is full (every worker's index holds at least 90 %
  of its KV capacity), since the mirror's memory is bounded by the caches it mirrors, not by time.
- Stuck: after the load stops, the router must reach 0 in flight and 0 queued within ``--drain-s``;
  client requests that time out (``--request-timeout-s``) are counted as stuck too.

Writes ``benchmarks/results/reliability_soak.json`` (or ``--out``) with the RSS series.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from reliability_cluster import PROFILE, free_port, spawn_worker, stop_worker

from sglang_ppd.bench.runner import BenchOptions, Replay, sessions_of
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.workload import load_workload

RESULT = Path(__file__).parent / "results" / "reliability_soak.json"
TURNS = 4
MIRROR_FULL = 0.9
"""The share of each worker's KV capacity its prefix index must hold for the mirror to count as full."""
SESSIONS = (
    "sessions:n={n},rate={rate},turns=4,think_s=exp:1,prompt=uniform:500:2000,user=uniform:50:200,"
    "output=uniform:16:64"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    rss_kib: int
    inflight: int
    queued: int
    indexed_blocks: int
    """Summed over the workers' prefix indexes."""
    table_blocks: int
    """Unique blocks in the router's shared block table."""
    mirror_full: bool


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _stats(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with s.get(f"{url}/stats") as r:
        data: dict[str, Any] = await r.json()
        return data


async def calibrate(url: str, args: argparse.Namespace) -> float:
    """Completed requests per second with ``calib_concurrency`` users, each running the soak's
    sessions back to back without think time (so exactly that many requests are in flight)."""
    spec = SESSIONS.format(n=100 * args.calib_concurrency, rate=1000).replace("think_s=exp:1", "think_s=0")
    sessions = iter(sessions_of(load_workload(spec=spec, seed=args.seed + 1)))
    replay = Replay(BenchOptions(url=url, seed=args.seed + 1, duration_s=args.calib_s))

    async def user(s: aiohttp.ClientSession) -> None:
        for turns in sessions:
            if not replay.can_send():
                return
            await replay.run_session(s, turns)

    replay.t0 = time.perf_counter()
    async with aiohttp.ClientSession(read_bufsize=1 << 22) as s:
        await asyncio.gather(*(user(s) for _ in range(args.calib_concurrency)))
    wall_s = time.perf_counter() - replay.t0
    return sum(r.ok for r in replay.result.records) / wall_s


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    kv = ("--kv-capacity-tokens", str(args.kv_capacity_tokens))
    workers = list(
        await asyncio.gather(*(spawn_worker(r, 1.0, *kv) for r in ("prefill", "decode", "decode")))
    )
    port = free_port()
    flags = []
    for w in workers:
        flags += ["--prefill", w.url, str(w.bootstrap_port)] if w.role == "prefill" else ["--decode", w.url]
    router = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sglang_ppd.cli", "router", *flags, "--port", str(port),
        "--policy", "ppd_deflect", "--log-level", "warning",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    samples: list[Sample] = []
    full_blocks = MIRROR_FULL * args.kv_capacity_tokens / load_profile(PROFILE).page_size
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for _ in range(300):
                try:
                    async with s.get(f"{url}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            capacity = args.capacity_rps or await calibrate(url, args)
            session_rate = args.load * capacity / TURNS
            n = int(session_rate * args.duration_s) + 10
            workload = load_workload(spec=SESSIONS.format(n=n, rate=session_rate), seed=args.seed)
            opts = BenchOptions(url=url, seed=args.seed, duration_s=args.duration_s,
                                request_timeout_s=args.request_timeout_s)  # fmt: skip
            print(f"capacity {capacity:.2f} req/s; soaking {args.duration_s:.0f} s at "
                  f"{session_rate:.3f} sessions/s", flush=True)  # fmt: skip
            t0 = time.monotonic()
            run = asyncio.create_task(Replay(opts).run(workload))
            while not run.done():
                st = await _stats(s, url)
                blocks = [w["indexed_blocks"] for w in st["workers"]]
                samples.append(Sample(
                    round(time.monotonic() - t0, 1), rss_kib(router.pid), st["requests"]["inflight"],
                    st["requests"]["queued"], sum(blocks), st["prefix_table_blocks"],
                    all(n >= full_blocks for n in blocks),
                ))  # fmt: skip
                await asyncio.wait({run}, timeout=args.sample_s)
            result = run.result()
            drained_after_s = None
            for i in range(int(args.drain_s * 10)):
                st = await _stats(s, url)
                if st["requests"]["inflight"] == 0 and st["requests"]["queued"] == 0:
                    drained_after_s = i / 10
                    break
                await asyncio.sleep(0.1)
            final_stats = await _stats(s, url)
    finally:
        router.terminate()
        await router.wait()
        await asyncio.gather(*(stop_worker(w) for w in workers))
    full_at = next((x.t_s for x in samples if x.mirror_full), None)
    start_s = None if full_at is None else max(args.warmup_s, full_at)
    steady = [x.rss_kib for x in samples if start_s is not None and x.t_s >= start_s]
    growth = None
    if len(steady) >= 6:
        growth = statistics.median(steady[-3:]) / statistics.median(steady[:3]) - 1
    records = result.records
    timeouts = sum(1 for rec in records if rec.error is not None and "timeout" in rec.error.lower())
    errors: dict[str, int] = {}
    for rec in records:
        if rec.error is not None:
            errors[rec.error[:80]] = errors.get(rec.error[:80], 0) + 1
    return {
        "benchmark": "soak: a bounded run at a fixed share of capacity",
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "cluster": "emulated 1P2D, time scale 1, profile h100-llama31-8b; router process, policy ppd_deflect",
        "kv_capacity_tokens_per_worker": args.kv_capacity_tokens,
        "duration_s": args.duration_s,
        "load": args.load,
        "capacity_rps": capacity,
        "capacity_measured": args.capacity_rps is None,
        "num_requests": len(records),
        "num_ok": sum(r.ok for r in records),
        "errors": errors,
        "num_stuck": timeouts + (0 if drained_after_s is not None else 1),
        "drained_after_s": drained_after_s,
        "mirror_full_at_s": full_at,
        "rss_growth_from_s": start_s,
        "rss_growth": growth,
        "rss_growth_ok": growth is not None and growth < 0.05,
        "rss_kib_first_last": [steady[0], steady[-1]] if steady else None,
        "rss_series": [dataclasses.asdict(x) for x in samples],
        "router_final": {"requests": final_stats["requests"], "reliability": final_stats.get("reliability")},
        "machine": machine_info(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=1800.0)
    p.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    p.add_argument("--capacity-rps", type=float, default=None, help="skip calibration")
    p.add_argument("--calib-s", type=float, default=30.0)
    p.add_argument("--calib-concurrency", type=int, default=16)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--drain-s", type=float, default=60.0)
    p.add_argument("--request-timeout-s", type=float, default=120.0)
    p.add_argument(
        "--kv-capacity-tokens",
        type=int,
        default=100_000,
        help="per emulated worker; the router mirrors every worker's cache (KV events), so its memory "
        "settles only once the caches are full and evicting: a smaller cache gets there within the warm-up",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    summary = asyncio.run(soak(args))
    write_result_json(args.out, summary)
    keys = (
        "num_requests",
        "num_ok",
        "num_stuck",
        "mirror_full_at_s",
        "rss_growth",
        "rss_growth_ok",
        "drained_after_s",
    )
    print({k: summary[k] for k in keys}, f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
