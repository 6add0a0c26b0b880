"""Simulator speed: the whole Azure conversation hour (19,366 requests) on the default 2P2D cluster,
in one process on one core (the target is <= 15 s).

    python benchmarks/sim_speed.py [--policies pd,ppd_deflect] [--repeat 3] [--seed 0]

Times ``simulate()`` only (loading the trace is reported apart), best of ``--repeat``, and reports
simulated requests per wall second and events per second. Writes ``benchmarks/results/sim_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import time

from sim_common import RESULTS

from sglang_ppd.metrics.result import write_result_json
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload

SPEC = "azure:"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", default="pd,pd_cache_aware,ppd,deflect,ppd_deflect")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    workload = load_workload(spec=SPEC, seed=args.seed)
    load_s = time.perf_counter() - t0
    rows = {}
    for policy in args.policies.split(","):
        walls, events = [], 0
        for _ in range(args.repeat):
            t = time.perf_counter()
            result, out = simulate(workload, policy, seed=args.seed)
            walls.append(time.perf_counter() - t)
            events = out.num_events
        best = min(walls)
        rows[policy] = {
            "wall_s_best": best,
            "wall_s_all": walls,
            "num_requests": len(workload),
            "requests_per_s": len(workload) / best,
            "events": events,
            "events_per_s": events / best,
            "simulated_s": out.end_s,
        }
        print(f"{policy:15s} {best:6.2f} s  {len(workload) / best:8.0f} req/s  {events / best:8.0f} events/s")
    write_result_json(RESULTS / "sim_speed.json", {
        "figure": "speed", "workload": SPEC, "num_requests": len(workload), "load_trace_s": load_s,
        "seed": args.seed, "cores_used": 1, "load_average_1m_before": load_before,
        "target_s": 15.0, "results": rows,
        "command": f"python benchmarks/sim_speed.py --policies {args.policies} --repeat {args.repeat}",
    })  # fmt: skip


if __name__ == "__main__":
    main()
