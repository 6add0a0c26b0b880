"""Emulated cluster through HTTP vs the simulator, on one small low-load workload.

    python benchmarks/emulator_vs_sim.py [--workload SPEC] [--policies pd,ppd] [--seed 0]

For each policy: simulate the workload; then launch the same cluster emulated (workers paced in
real time by the simulator's own batch scheduler, the router in front), replay the workload through
the router with ``sglang-ppd bench``'s replayer, and compare TTFT / TPOT (mean and p50) for Turn 1
and Turn 2+. A last replay at ``time_scale: 0`` (no modelled compute) measures the software floor of
the emulated path (client -> router -> workers -> router -> client, on this host). Writes
``benchmarks/results/emulator_vs_sim.json`` (machine, date, seed, load average included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sglang_ppd.bench.ports import free_block
from sglang_ppd.bench.runner import BenchOptions, Replay
from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.metrics.summary import summarize
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload

DEFAULT_WORKLOAD = (
    "sessions:n=24,rate=0.4,turns=3,think_s=exp:2,prompt=uniform:1500:4000,user=uniform:100:600,"
    "output=uniform:40:160"
)
OUT = Path(__file__).resolve().parent / "results" / "emulator_vs_sim.json"


def run_emulated(
    workload: Any, policy: str, seed: int, page_size: int, slo: Slo, time_scale: float = 1.0
) -> dict[str, Any]:
    base = free_block(4)
    cfg = {"num_prefill": 1, "num_decode": 1, "base_port": base, "page_size": page_size,
           "monitor": False, "emulator": {"time_scale": time_scale},
           "router": {"port": base + 3, "policy": policy,
                                        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms}}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv = [sys.executable, "-m", "sglang_ppd.launch", "--config", str(path), "--no-monitor",
                "--log-dir", str(Path(tmp) / "logs")]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "router ready" in line:
                    break
            else:
                raise RuntimeError(f"launch exited with {proc.wait()}")
            url = f"http://127.0.0.1:{base + 3}"
            result = asyncio.run(Replay(BenchOptions(url=url, seed=seed)).run(workload))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return summarize(result.records, slo=slo, wall_s=result.wall_s, policy=policy, seed=seed)


def rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else (a - b) / b


def compare(sim: dict[str, Any], emu: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for group in ("turn1", "turn2plus"):
        for metric in ("ttft_ms", "tpot_ms"):
            for stat in ("mean", "p50"):
                s, e = sim[group][metric][stat], emu[group][metric][stat]
                rows.append({"group": group, "metric": metric, "stat": stat, "sim": s, "emulated": e,
                             "abs_diff_ms": None if s is None or e is None else e - s, "rel_diff": rel(e, s)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    ap.add_argument("--policies", default="pd,ppd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    slo = Slo()
    workload = load_workload(spec=args.workload, seed=args.seed)
    out: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]), "workload": args.workload, "seed": args.seed,
        "num_requests": len(workload), "load_avg_before": os.getloadavg(),
        "cluster": "1P1D h100-llama31-8b, 50 GB/s link", "page_size": args.page_size,
        "machine": machine_info(), "policies": {},
    }  # fmt: skip
    for policy in args.policies.split(","):
        t0 = time.perf_counter()
        cluster = SimConfig(num_prefill=1, num_decode=1)
        sim, _ = simulate(workload, policy, slo=slo, config=cluster, seed=args.seed)
        emu = run_emulated(workload, policy, args.seed, args.page_size, slo)
        rows = compare(sim, emu)
        out["policies"][policy] = {
            "rows": rows, "sim_routes": sim["routes"], "emulated_failed": emu["num_failed"],
            "emulated_requests": emu["num_requests"], "wall_s": time.perf_counter() - t0,
        }  # fmt: skip
        print(f"\n{policy}: sim routes {sim['routes']}, emulated {emu['num_requests']} requests "
              f"({emu['num_failed']} failed)")
        head = ("group", "metric", "stat", "sim", "emulated", "diff ms", "diff")
        print("{:<10} {:<8} {:<5} {:>9} {:>9} {:>8} {:>7}".format(*head))
        for r in rows:
            d = "-" if r["rel_diff"] is None else f"{100 * r['rel_diff']:+.1f}%"
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            nums = (fmt(r["sim"]), fmt(r["emulated"]), fmt(r["abs_diff_ms"]), d)
            cells = (r["group"], r["metric"], r["stat"], *nums)
            print("{:<10} {:<8} {:<5} {:>9} {:>9} {:>8} {:>7}".format(*cells))
    # The same replay with no modelled compute: what the HTTP/router/emulator stack itself costs here.
    floor = run_emulated(workload, "pd", args.seed, args.page_size, slo, time_scale=0.0)
    out["overhead_floor_time_scale_0"] = {
        g: {"ttft_ms": floor[g]["ttft_ms"], "tpot_ms": floor[g]["tpot_ms"]} for g in ("turn1", "turn2plus")
    }
    t1, t2 = floor["turn1"]["ttft_ms"]["p50"], floor["turn2plus"]["ttft_ms"]["p50"]
    print(f"\nsoftware floor (policy pd, time_scale 0): TTFT p50 turn1 {t1:.1f} ms, turn2+ {t2:.1f} ms")
    out["load_avg_after"] = os.getloadavg()
    print(f"\nwrote {write_result_json(args.out, out)}")
    worst = {p: max(abs(r["rel_diff"] or 0) for r in v["rows"]) for p, v in out["policies"].items()}
    print("largest relative difference per policy:", json.dumps(worst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
