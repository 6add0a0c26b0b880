"""All telemetry stops for 30 s under load; SLO attainment vs the ``pd`` baseline, and
local routes to workers of unknown state.

    python benchmarks/reliability_telemetry.py [--blackout-s 30] [--warmup-s 10] [--after-s 10] [--seed 0]

An emulated 1P2D cluster (real time, ``h100-llama31-8b`` cost profile) behind the sglang_ppd router
(in this process) replays closed-loop multi-turn sessions for warmup + blackout + after seconds,
three times on a fresh cluster each:

- ``pd``: the baseline policy, telemetry on;
- ``ppd_deflect``: telemetry on (reference);
- ``ppd_deflect_blackout``: between ``warmup_s`` and ``warmup_s + blackout_s`` every telemetry
  subscriber and poller of the router is cancelled (no KV event, LoadStat, WorkerTelemetry or
  ``/v1/loads`` reply arrives), then restored by re-discovery.

For each: SLO attainment (TTFT <= 2000 ms and TPOT <= 100 ms; failed requests count as misses) over
the whole run, over requests that arrived in the blackout window, and over the "dark" part of it
(after the last telemetry is older than ``max_telemetry_age_ms``, where every route must be PD),
routes, failed requests, and the router's ``local_dispatched_unknown_state`` counter (must be 0) and
``local_overridden_unknown_state`` (the policy chose local on stale state and the router made it PD;
0 when the policy already falls back on its own). Writes ``benchmarks/results/reliability_telemetry.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from reliability_cluster import blackout, cluster, replay, restore

from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.metrics.summary import meets_slo
from sglang_ppd.workload import load_workload

RESULT = Path(__file__).parent / "results" / "reliability_telemetry.json"
WORKLOAD = (
    "sessions:n={n},rate={rate},turns=4,think_s=exp:2,prompt=uniform:1000:4000,user=uniform:50:300,"
    "output=uniform:16:64"
)
SLO = Slo(ttft_ms=2000.0, tpot_ms=100.0)
MAX_AGE_MS = 1000.0
"""The router's ``slo.max_telemetry_age_ms`` (its default): older telemetry is unknown state."""


def _window(records: list[RequestRecord], start_s: float, end_s: float) -> dict[str, Any]:
    rs = [r for r in records if start_s <= r.arrival_s < end_s]
    routes: dict[str, int] = {}
    for r in rs:
        routes[r.route or "failed"] = routes.get(r.route or "failed", 0) + 1
    return {
        "num_requests": len(rs),
        "slo_attainment": sum(meets_slo(r, SLO) for r in rs) / len(rs) if rs else None,
        "num_failed": sum(not r.ok for r in rs),
        "routes": routes,
    }


async def one_run(name: str, policy: str, args: argparse.Namespace, dark: bool) -> dict[str, Any]:
    total_s = args.warmup_s + args.blackout_s + args.after_s
    workload = load_workload(spec=WORKLOAD.format(n=int(total_s * args.rate), rate=args.rate), seed=args.seed)
    async with cluster(1, 2, policy, slo={"max_telemetry_age_ms": MAX_AGE_MS}) as (_, router, url):
        run = asyncio.create_task(replay(url, workload, args.seed, duration_s=total_s))
        if dark:
            await asyncio.sleep(args.warmup_s)
            blackout(router)
            await asyncio.sleep(args.blackout_s)
            await restore(router)
        result = await run
        rel = router.reliability.stats()
    records = result.records
    window = (args.warmup_s, args.warmup_s + args.blackout_s)
    out = {
        "name": name,
        "policy": policy,
        "telemetry_blackout_s": window if dark else None,
        "overall": _window(records, 0.0, float("inf")),
        "blackout_window": _window(records, *window),
        "dark_window": _window(records, window[0] + MAX_AGE_MS / 1000.0, window[1]),
        "local_dispatched_unknown_state": rel["local_dispatched_unknown_state"],
        "local_overridden_unknown_state": rel["local_overridden_unknown_state"],
        "wall_s": result.wall_s,
    }
    win = out["blackout_window"]
    print(
        f"{name:22s} SLO overall {out['overall']['slo_attainment']:.3f}  in window "
        f"{win['slo_attainment']:.3f}  routes in window {win['routes']}  "
        f"dark {out['dark_window']['routes']}  local->unknown {out['local_dispatched_unknown_state']}",
        flush=True,
    )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = [
        await one_run("pd", "pd", args, dark=False),
        await one_run("ppd_deflect", "ppd_deflect", args, dark=False),
        await one_run("ppd_deflect_blackout", "ppd_deflect", args, dark=True),
    ]
    base = runs[0]["overall"]["slo_attainment"]
    dark = runs[2]
    return {
        "benchmark": "reliability_telemetry: all telemetry stops under load",
        "command": "python benchmarks/reliability_telemetry.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "cluster": "emulated 1P2D, time scale 1, profile h100-llama31-8b, router in-process",
        "workload": WORKLOAD.format(
            n=int((args.warmup_s + args.blackout_s + args.after_s) * args.rate), rate=args.rate
        ),
        "slo": {"ttft_ms": SLO.ttft_ms, "tpot_ms": SLO.tpot_ms},
        "runs": runs,
        "r2": {
            "blackout_slo_attainment": dark["overall"]["slo_attainment"],
            "pd_baseline_slo_attainment": base,
            "attainment_at_least_pd": dark["overall"]["slo_attainment"] >= base,
            "local_routes_to_unknown_state": dark["local_dispatched_unknown_state"],
            "dark_window_routes": dark["dark_window"]["routes"],
        },
        "machine": machine_info(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blackout-s", type=float, default=30.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--after-s", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=1.0, help="new sessions per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    summary = asyncio.run(main_async(args))
    write_result_json(args.out, summary)
    print(f"telemetry blackout: {summary['r2']}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
