"""Regret table: every policy's goodput against the best policy of each cell, over a grid of
3 loads x 2 SLO profiles x 2 workloads, with ``threshold`` tuned per cell as an oracle.

    python benchmarks/sim_regret.py [--seeds 2]

Workloads: ShareGPT closed-loop sessions (``sharegpt:n=1000``, multi-turn) at session rates
0.2/0.3/0.5 per second, and the Azure conversation hour (open loop, single-turn, bursty) at rate
scales 6/10/12. SLO profiles: TTFT-tight (TTFT 500 ms, TPOT 100 ms) and TPOT-tight (TTFT 5 s,
TPOT 25 ms). ``threshold`` runs at every ``max_uncached_len`` in THRESHOLDS (other parameters at
their defaults). Per cell, the best goodput over all runs (seed-mean) is the reference; a policy's
regret is (best - its goodput) / best, on two goodput definitions (see METRICS). The oracle is
the per-cell best threshold; the best *single*
threshold setting is the one with the smallest worst-case regret over all cells. ``--reuse FILE``
recomputes the tables from the runs saved in a previous result JSON. Writes
``benchmarks/results/sim_regret.json`` (policy defaults untouched: nothing here is tuned).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim_common import RESULTS, Task, mean, parallel_map, run_task

from sglang_ppd.metrics.result import write_result_json

WORKLOADS: dict[str, tuple[str, tuple[float, ...]]] = {
    "sharegpt": ("sharegpt:n=1000,rate=1", (0.2, 0.3, 0.5)),
    "azure": ("azure:", (6.0, 10.0, 12.0)),
}
SLOS = {"ttft_tight": (500.0, 100.0), "tpot_tight": (5000.0, 25.0)}
POLICIES = ("pd", "pd_cache_aware", "always_local", "ppd", "deflect", "ppd_deflect")
THRESHOLDS = (64, 128, 256, 512, 1024, 2048, 4096)


def tasks(seeds: int, workloads: dict[str, tuple[str, tuple[float, ...]]]) -> list[Task]:
    out = []
    for wname, (spec, loads) in workloads.items():
        for load in loads:
            for sname, slo in SLOS.items():
                cell = {"workload": wname, "load": load, "slo_profile": sname}
                for seed in range(seeds):
                    for p in POLICIES:
                        out.append(Task(spec, load, p, seed, slo=slo, label=p, extra=cell))
                    for t in THRESHOLDS:
                        out.append(Task(spec, load, "threshold", seed, (("max_uncached_len", t),), slo,
                                        label=f"threshold_T{t}", extra=cell))  # fmt: skip
    return out


METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "goodput_rps": lambda r: r["goodput_rps"],
    # Requests meeting the SLO: goodput over a span common to every policy of the cell. In the closed
    # loop the run's own span is set by the longest sessions' think times, which makes goodput_rps
    # differences there mostly noise.
    "good_requests": lambda r: (r["slo_attainment"] or 0.0) * r["num_requests"],
}


def regret_table(
    runs: list[dict[str, Any]], metric: Callable[[dict[str, Any]], float], workloads: list[str]
) -> dict[str, Any]:
    cells: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        key = f"{r['workload']}@{r['load']:g}/{r['slo_profile']}"
        cells.setdefault(key, {}).setdefault(r["label"], []).append(metric(r))
    labels = [*POLICIES, *(f"threshold_T{t}" for t in THRESHOLDS)]
    table: dict[str, dict[str, Any]] = {}
    for key, by_label in cells.items():
        value = {lbl: mean(by_label[lbl]) or 0.0 for lbl in labels}
        best_label = max(value, key=lambda lbl: value[lbl])
        best = value[best_label]
        oracle_label = max((f"threshold_T{t}" for t in THRESHOLDS), key=lambda lbl: value[lbl])
        regret = {lbl: (best - g) / best if best > 0 else 0.0 for lbl, g in value.items()}
        regret["threshold_oracle"] = regret[oracle_label]
        table[key] = {"value": value, "best": best_label, "oracle_threshold": oracle_label, "regret": regret}
    everything = [*labels, "threshold_oracle"]
    worst = {lbl: max(c["regret"][lbl] for c in table.values()) for lbl in everything}
    worst_by_workload = {
        w: {lbl: max(c["regret"][lbl] for k, c in table.items() if k.startswith(w)) for lbl in everything}
        for w in workloads
    }
    best_single = min((f"threshold_T{t}" for t in THRESHOLDS), key=lambda lbl: worst[lbl])
    claims = {
        "ppd_deflect_worst_regret": worst["ppd_deflect"],
        "best_single_threshold": best_single,
        "best_single_threshold_worst_regret": worst[best_single],
        "ppd_deflect_below_best_single_threshold": worst["ppd_deflect"] < worst[best_single],
    }
    return {
        "table": table,
        "worst_case_regret": worst,
        "worst_by_workload": worst_by_workload,
        "claims": claims,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--reuse", help="recompute the tables from the runs saved in this result JSON")
    ap.add_argument(
        "--sharegpt-loads", help="override the ShareGPT session rates (comma-separated; empty: skip)"
    )
    ap.add_argument("--azure-loads", help="override the Azure rate scales (comma-separated; empty: skip)")
    ap.add_argument("--name", default="sim_regret", help="result file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    workloads = dict(WORKLOADS)
    for key, text in (("sharegpt", args.sharegpt_loads), ("azure", args.azure_loads)):
        if text is not None:
            loads = tuple(float(x) for x in text.split(",") if x.strip())
            if loads:
                workloads[key] = (WORKLOADS[key][0], loads)
            else:
                del workloads[key]
    if args.reuse:
        saved = json.loads(Path(args.reuse).read_text())
        runs, seeds = saved["runs"], saved["seeds"]
    else:
        runs, seeds = parallel_map(run_task, tasks(args.seeds, workloads)), list(range(args.seeds))
    out = {name: regret_table(runs, fn, list(workloads)) for name, fn in METRICS.items()}
    head = ["pd", "pd_cache_aware", "always_local", "ppd", "deflect", "ppd_deflect", "threshold_oracle"]
    for name, res in out.items():
        print(f"\nregret on {name}")
        print(f"{'cell':28s} {'best':16s} " + " ".join(f"{h[:12]:>12s}" for h in head))
        for key, c in sorted(res["table"].items()):
            print(f"{key:28s} {c['best']:16s} " + " ".join(f"{100 * c['regret'][h]:11.1f}%" for h in head))
        for w, worst in res["worst_by_workload"].items():
            print(f"worst on {w}:", {k: round(100 * v, 1) for k, v in worst.items()})
        print(res["claims"])
    command = " ".join(["python benchmarks/sim_regret.py", *(shlex.quote(x) for x in sys.argv[1:])])
    write_result_json(RESULTS / f"{args.name}.json", {
        "figure": "regret",
        "workloads": {k: {"spec": s, "loads": list(v)} for k, (s, v) in workloads.items()},
        "slo_profiles": {k: {"ttft_ms": a, "tpot_ms": b} for k, (a, b) in SLOS.items()},
        "thresholds": list(THRESHOLDS), "seeds": seeds, "cluster": "2P2D default SimConfig",
        "metrics": out, "runs": runs,
        "command": command,
    })  # fmt: skip


if __name__ == "__main__":
    main()
