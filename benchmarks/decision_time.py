"""Microbenchmark of one routing decision: ``decide()`` on random 16-worker (8P8D) snapshots.

    python benchmarks/decision_time.py [--seed 0] [--samples 5000] [--repeat 5] [--policies ppd_deflect,...]

Snapshots and requests are generated up front from the seed (mixed Turn 1 / Turn 2+ requests, some
stale or missing telemetry, some approximate hits, a loaded KV link), then each ``decide()`` call is
timed alone with ``perf_counter_ns``, the garbage collector off as ``timeit`` does (one more pass with
it on is reported too). Writes ``benchmarks/results/decision_time.json`` with machine,
CPU, load average, date, seed and Python version. The target is ppd_deflect p99 <= 50 us,
judged on each snapshot's best of the passes (the all-calls p99 is reported next to it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sglang_ppd.core.costmodel import DEFAULT_PROFILE, load_profile
from sglang_ppd.core.policy import load_policy
from sglang_ppd.core.types import (
    ClusterSnapshot,
    LinkSnapshot,
    RequestFeatures,
    Role,
    Route,
    Slo,
    WorkerSnapshot,
)
from sglang_ppd.metrics.result import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
NUM_PREFILL = 8
NUM_DECODE = 8
Cases = list[tuple[RequestFeatures, ClusterSnapshot]]


def age(rng: random.Random) -> float | None:
    u = rng.random()
    if u < 0.03:
        return None  # never heard from
    if u < 0.08:
        return rng.uniform(1500.0, 5000.0)  # stale
    return rng.uniform(0.0, 200.0)


def random_snapshot(rng: random.Random, capacity: int) -> ClusterSnapshot:
    workers: list[WorkerSnapshot] = []
    for i in range(NUM_PREFILL):
        queued = rng.choice((0, rng.randrange(0, 8192), rng.randrange(0, 200_000)))
        workers.append(
            WorkerSnapshot(
                worker_id=f"p{i}",
                role=Role.PREFILL,
                age_ms=age(rng),
                num_inflight=rng.randrange(0, 64),
                num_running=rng.randrange(0, 8),
                num_waiting=rng.randrange(0, 32),
                queued_prefill_tokens=queued,
                kv_used_tokens=rng.randrange(0, capacity),
                kv_capacity_tokens=capacity,
                healthy=rng.random() > 0.02,
            )
        )
    for i in range(NUM_DECODE):
        running = rng.randrange(0, 256)
        ctx = running * rng.randrange(500, 6000)
        workers.append(
            WorkerSnapshot(
                worker_id=f"d{i}",
                role=Role.DECODE,
                age_ms=age(rng),
                num_inflight=running + rng.randrange(0, 8),
                num_running=running,
                num_waiting=rng.randrange(0, 8),
                queued_prefill_tokens=rng.choice((0, 0, rng.randrange(0, 16_000))),
                kv_used_tokens=min(ctx, capacity),
                kv_capacity_tokens=capacity,
                decode_iter_ms=rng.choice((None, rng.uniform(7.0, 40.0))),
                running_context_tokens=ctx,
                num_local_prefills=rng.randrange(0, 3),
                supports_local_prefill=rng.random() > 0.1,
                healthy=rng.random() > 0.02,
            )
        )
    link = LinkSnapshot(50e9, rng.choice((0, rng.randrange(0, 5 * 10**9))), rng.uniform(0.0, 100.0))
    return ClusterSnapshot(workers=tuple(workers), link=link)


def random_request(rng: random.Random, n: int) -> RequestFeatures:
    prompt_len = rng.randrange(64, 16_000)
    hits: dict[str, int] = {}
    for i in range(NUM_PREFILL):
        if rng.random() < 0.3:
            hits[f"p{i}"] = rng.randrange(0, prompt_len)
    turn = 1
    if rng.random() < 0.6:  # Turn 2+: the history sits on the D worker that served the last turn
        turn = rng.randrange(2, 10)
        hits[f"d{rng.randrange(NUM_DECODE)}"] = int(prompt_len * rng.uniform(0.5, 0.99))
    approx = frozenset(w for w in hits if rng.random() < 0.1)
    return RequestFeatures(
        request_id=f"r{n}",
        prompt_len=prompt_len,
        max_new_tokens=rng.randrange(16, 1024),
        cached_len=hits,
        approx_workers=approx,
        session_id=f"s{n}",
        turn=turn,
    )


def pct(sorted_us: list[float], q: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))]


def timed_pass(decide: Callable[..., Route], cases: Cases, slo: Slo, out: list[float]) -> Counter[str]:
    routes: Counter[str] = Counter()
    clock = time.perf_counter_ns
    for r, s in cases:
        t0 = clock()
        route = decide(r, s, slo)
        t1 = clock()
        out.append((t1 - t0) / 1000.0)
        routes[f"{route.kind.value}:{route.reason}"] += 1
    return routes


def summary(times_us: list[float]) -> dict[str, float]:
    times_us.sort()
    return {
        "p50_us": round(pct(times_us, 0.50), 2),
        "p90_us": round(pct(times_us, 0.90), 2),
        "p99_us": round(pct(times_us, 0.99), 2),
        "max_us": round(times_us[-1], 2),
        "mean_us": round(statistics.fmean(times_us), 2),
    }


def bench(name: str, cases: Cases, slo: Slo, repeat: int) -> dict:
    """``repeat`` passes with the garbage collector off, as ``timeit`` does (a gen-2 collection
    over the pre-built snapshots is a property of this process's heap, not of the decision), then
    one pass with it on, reported separately."""
    decide = load_policy(name, {}, load_profile(DEFAULT_PROFILE)).decide
    for r, s in cases[:200]:  # warm-up
        decide(r, s, slo)
    passes: list[list[float]] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            passes.append([])
            routes = timed_pass(decide, cases, slo, passes[-1])
    finally:
        gc.enable()
    with_gc: list[float] = []
    timed_pass(decide, cases, slo, with_gc)
    return {
        "policy": name,
        "num_decisions": len(cases) * repeat,
        **summary([t for p in passes for t in p]),
        # Each snapshot's fastest of the passes: the decision's own cost, with the preemptions a
        # shared machine adds to single calls filtered out.
        "best_of_passes": summary([min(ts) for ts in zip(*passes, strict=True)]),
        "gc_enabled": summary(with_gc),
        "routes": dict(sorted(routes.items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=5000, help="distinct (request, snapshot) pairs")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes over the samples")
    ap.add_argument("--policies", default="ppd_deflect", help="comma-separated; the first is the target")
    ap.add_argument("--target-p99-us", type=float, default=50.0)
    ap.add_argument("--json", type=Path, default=RESULTS / "decision_time.json")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    capacity = load_profile(DEFAULT_PROFILE).kv_capacity_tokens
    cases = [(random_request(rng, i), random_snapshot(rng, capacity)) for i in range(args.samples)]
    slo = Slo()
    load_before = os.getloadavg()
    results = [bench(n.strip(), cases, slo, args.repeat) for n in args.policies.split(",") if n.strip()]
    load_after = os.getloadavg()
    target = results[0]
    out = {
        "benchmark": "decision_time",
        "command": "python benchmarks/decision_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": platform.node(),
        "cpu": cpu_model(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "python": platform.python_version(),
        "seed": args.seed,
        "workers": {"prefill": NUM_PREFILL, "decode": NUM_DECODE},
        "samples": args.samples,
        "repeat": args.repeat,
        "target_p99_us": args.target_p99_us,
        # Judged on each snapshot's best of the passes: on a shared machine the all-calls p99 also
        # counts other tenants' preemptions (see loadavg); both are reported.
        "target_metric": "best_of_passes.p99_us",
        "target_met": target["best_of_passes"]["p99_us"] <= args.target_p99_us,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        b, g = r["best_of_passes"], r["gc_enabled"]
        print(
            f"{r['policy']:>15}: p50 {r['p50_us']:6.2f} us  p99 {r['p99_us']:6.2f} us"
            f"  (n={r['num_decisions']});  best of passes: p99 {b['p99_us']:6.2f} us;"
            f"  gc on: p99 {g['p99_us']:6.2f} us"
        )
    print(f"wrote {args.json}")
    return 0 if out["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
