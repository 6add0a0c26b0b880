"""Decision quality with R router replicas behind a load balancer (simulated; ``sim.replicas``).

    python benchmarks/sim_replicas.py [--seeds 2] [--policy ppd_deflect] [--sync-ms 1]

R = 1, 2, 4, 8 replicas of the ``ppd_deflect`` router. Every replica reads the same KV events
and the same telemetry (same age); each keeps its own in-flight books, so between telemetry
samples a replica does not see what its peers just sent. Configurations per R > 1: HAProxy
``roundrobin`` without sync (the default deployment), ``roundrobin`` with peer sync of in-flight
reservations delivered ``--sync-ms`` later, and ``leastconn`` without sync. Sessions are not
sticky (HAProxy's default); ``session`` stickiness is not in the grid. Workloads and SLO profiles
are those of the earlier regret grid (ShareGPT sessions at 0.3/0.5 sessions/s, the Azure
conversation hour at x10/x12; TTFT-tight 500/100 ms, TPOT-tight 5000/25 ms), fixed before any run.

Goodput regret of a configuration in a cell = 1 - good/good(R = 1), ``good`` being the requests
that met the SLO (the workload is the same in every configuration of a cell, so this is the
attainment difference); negative regret means more requests met the SLO than with one router.
Writes ``benchmarks/results/sim_replicas.json`` (machine, date, seeds, every run).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from sim_common import RESULTS, Task, mean, parallel_map, run_task

from sglang_ppd.metrics.result import write_result_json

WORKLOADS: dict[str, tuple[str, tuple[float, ...]]] = {
    "sharegpt": ("sharegpt:n=1000,rate=1", (0.3, 0.5)),
    "azure": ("azure:", (10.0, 12.0)),
}
SLOS = {"ttft_tight": (500.0, 100.0), "tpot_tight": (5000.0, 25.0)}
ROUTERS = (2, 4, 8)
ONE = "R1"


def configs(sync_ms: float) -> dict[str, tuple[tuple[str, Any], ...]]:
    out: dict[str, tuple[tuple[str, Any], ...]] = {ONE: ()}
    for r in ROUTERS:
        out[f"R{r}"] = (("num_routers", r),)
        out[f"R{r}+sync"] = (("num_routers", r), ("peer_sync_ms", sync_ms))
        out[f"R{r}/leastconn"] = (("num_routers", r), ("lb_balance", "leastconn"))
    return out


def tasks(seeds: int, policy: str, sync_ms: float) -> list[Task]:
    out = []
    for wname, (spec, loads) in WORKLOADS.items():
        for load in loads:
            for sname, slo in SLOS.items():
                cell = {"workload": wname, "load": load, "slo_profile": sname}
                for seed in range(seeds):
                    for label, cfg in configs(sync_ms).items():
                        out.append(Task(spec, load, policy, seed, slo=slo, label=label, config=cfg,
                                        extra=cell))  # fmt: skip
    return out


def _good(r: dict[str, Any]) -> float:
    return (r["slo_attainment"] or 0.0) * r["num_requests"]


def table(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """cell -> configuration -> seed means and regret against R1 of the same cell."""
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        key = f"{r['workload']}@{r['load']:g}/{r['slo_profile']}"
        cells.setdefault(key, {}).setdefault(r["label"], []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, by_label in cells.items():
        base = mean(_good(r) for r in by_label[ONE]) or 0.0
        out[key] = {}
        for label, rs in by_label.items():
            good = mean(_good(r) for r in rs) or 0.0
            out[key][label] = {
                "regret": 1.0 - good / base if base > 0 else 0.0,
                "slo_attainment": mean(r["slo_attainment"] for r in rs),
                "goodput_rps": mean(r["goodput_rps"] for r in rs),
                "ttft_p50_ms": mean(r["overall"]["ttft_ms"]["p50"] for r in rs),
                "ttft_p95_ms": mean(r["overall"]["ttft_ms"]["p95"] for r in rs),
                "tpot_p50_ms": mean(r["overall"]["tpot_ms"]["p50"] for r in rs),
                "tpot_p95_ms": mean(r["overall"]["tpot_ms"]["p95"] for r in rs),
                "local_fraction": mean(
                    sum(v for k, v in r["routes"].items() if k != "pd") / r["num_requests"] for r in rs
                ),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--policy", default="ppd_deflect")
    ap.add_argument("--sync-ms", type=float, default=1.0, help="peer sync delivery delay")
    args = ap.parse_args()
    runs = parallel_map(run_task, tasks(args.seeds, args.policy, args.sync_ms))
    t = table(runs)
    labels = list(configs(args.sync_ms))
    worst = {lbl: max(c[lbl]["regret"] for c in t.values()) for lbl in labels}
    print(f"{'cell':28s} {'config':14s} {'regret':>7s} {'attain':>7s} {'TTFT p50':>9s} {'TTFT p95':>9s} "
          f"{'TPOT p50':>9s} {'TPOT p95':>9s} {'local':>6s}")  # fmt: skip
    for key in sorted(t):
        for lbl in labels:
            c = t[key][lbl]
            print(f"{key:28s} {lbl:14s} {100 * c['regret']:6.2f}% {c['slo_attainment']:7.3f} "
                  f"{c['ttft_p50_ms']:9.0f} {c['ttft_p95_ms']:9.0f} {c['tpot_p50_ms']:9.1f} "
                  f"{c['tpot_p95_ms']:9.1f} {c['local_fraction']:6.2f}")  # fmt: skip
    print("worst-case regret:", {k: round(100 * v, 2) for k, v in worst.items()})
    claims = {"R4_worst_regret": worst["R4"], "R4_within_2pct_of_R1": worst["R4"] <= 0.02}
    print(claims)
    command = " ".join(["python benchmarks/sim_replicas.py", *(shlex.quote(x) for x in sys.argv[1:])])
    write_result_json(RESULTS / "sim_replicas.json", {
        "figure": "replicas", "policy": args.policy, "peer_sync_ms": args.sync_ms,
        "workloads": {k: {"spec": s, "loads": list(v)} for k, (s, v) in WORKLOADS.items()},
        "slo_profiles": {k: {"ttft_ms": a, "tpot_ms": b} for k, (a, b) in SLOS.items()},
        "seeds": list(range(args.seeds)), "cluster": "2P2D default SimConfig",
        "table": t, "worst_case_regret": worst, "claims": claims, "runs": runs, "command": command,
    })  # fmt: skip


if __name__ == "__main__":
    main()
