"""The router's per-request metric updates: the hand-written ``RouterMetrics`` against
``prometheus_client`` (single-process, and its multiprocess mode, which N router processes need).

    python benchmarks/metrics_hot_path.py [--requests 200000] [--seed 0]
        # -> benchmarks/results/metrics_hot_path.json

Per request the router counts its status, its route decision and reason, observes the decision and
prefix-lookup times, TTFT and TPOT, and adds KV bytes: the same eight updates are replayed here
with seeded values. Reported: microseconds of CPU per request for each (best of 5 rounds), and the
time to render ``/metrics`` once. Single process, no I/O: the difference is the metrics library's
own cost on the hot path.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.router.metrics import DECISION_BUCKETS_S, LATENCY_BUCKETS_S, TPOT_BUCKETS_S, RouterMetrics

OUT = Path(__file__).parent / "results" / "metrics_hot_path.json"


def _inputs(n: int, seed: int) -> list[tuple[str, int, str, str, float, float, float, float]]:
    rng = random.Random(seed)
    reasons = [f"ppd:reason{i}" for i in range(12)]
    return [
        (
            rng.choice(("generate", "chat", "completions")),
            200 if rng.random() < 0.99 else 503,
            rng.choice(("pd", "local", "deflect")),
            rng.choice(reasons),
            rng.uniform(1e-5, 1e-3),
            rng.uniform(1e-5, 1e-3),
            rng.uniform(0.01, 3.0),
            rng.uniform(0.005, 0.1),
        )
        for _ in range(n)
    ]


def _ours(inputs: list[Any]) -> tuple[float, float]:
    m = RouterMetrics()
    t0 = time.process_time()
    for endpoint, status, route, reason, dec, pfx, ttft, tpot in inputs:
        m.requests[(endpoint, status)] += 1
        m.count_decision(route, reason)
        m.decision.observe(dec)
        m.prefix_lookup.observe(pfx)
        m.record_finish("2+", ttft, tpot, 2.0, 0.1)
        m.kv_bytes_transferred += 131072
    spent = time.process_time() - t0
    t1 = time.process_time()
    m.render([("http://w:1", "decode", 10.0, 3, 100)])
    return spent, time.process_time() - t1


def _prometheus(inputs: list[Any]) -> tuple[float, float]:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    reg = CollectorRegistry()
    requests = Counter("requests", "", ["endpoint", "status"], registry=reg)
    decisions = Counter("route_decisions", "", ["route", "reason"], registry=reg)
    decision = Histogram("decision_seconds", "", buckets=DECISION_BUCKETS_S, registry=reg)
    prefix = Histogram("prefix_lookup_seconds", "", buckets=DECISION_BUCKETS_S, registry=reg)
    ttft_h = Histogram("ttft_seconds", "", ["turn"], buckets=LATENCY_BUCKETS_S, registry=reg)
    tpot_h = Histogram("tpot_seconds", "", ["turn"], buckets=TPOT_BUCKETS_S, registry=reg)
    slo = Counter("slo", "", ["kind"], registry=reg)
    kv = Counter("kv_bytes", "", registry=reg)
    t0 = time.process_time()
    for endpoint, status, route, reason, dec, pfx, ttft, tpot in inputs:
        requests.labels(endpoint, str(status)).inc()
        decisions.labels(route, reason).inc()
        decision.observe(dec)
        prefix.observe(pfx)
        ttft_h.labels("2+").observe(ttft)
        tpot_h.labels("2+").observe(tpot)
        slo.labels("both").inc(ttft <= 2.0 and tpot <= 0.1)
        kv.inc(131072)
    spent = time.process_time() - t0
    t1 = time.process_time()
    generate_latest(reg)
    return spent, time.process_time() - t1


def _prometheus_multiprocess(inputs: list[Any]) -> tuple[float, float]:
    """Values in mmap'ed files under PROMETHEUS_MULTIPROC_DIR, as N router processes would share."""
    with tempfile.TemporaryDirectory() as d:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
        try:
            from prometheus_client import values

            values.ValueClass = values.get_value_class()  # the mmap-backed class, now the dir is set
            return _prometheus(inputs)
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            values.ValueClass = values.get_value_class()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    inputs = _inputs(args.requests, args.seed)
    rows: dict[str, dict[str, float]] = {}
    for name, fn in (
        ("hand-written RouterMetrics", _ours),
        ("prometheus_client", _prometheus),
        ("prometheus_client multiprocess", _prometheus_multiprocess),
    ):
        runs = [fn(inputs) for _ in range(args.rounds)]
        rows[name] = {
            "us_per_request": min(r[0] for r in runs) / args.requests * 1e6,
            "render_ms": min(r[1] for r in runs) * 1e3,
        }
        row = rows[name]
        print(f"{name:32s} {row['us_per_request']:6.2f} us/request  render {row['render_ms']:.2f} ms")

    result = {
        "benchmark": "metrics_hot_path",
        "seed": args.seed,
        "machine": machine_info(),
        "setup": {
            "requests": args.requests,
            "rounds": args.rounds,
            "updates_per_request": 8,
            "prometheus_client": importlib.metadata.version("prometheus_client"),
        },
        "rows": rows,
    }
    print(f"-> {write_result_json(args.out, result)}")


if __name__ == "__main__":
    main()
