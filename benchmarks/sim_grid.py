"""The evaluation grid: every registered policy and the tuned ``threshold`` family on 4 workloads x
3 loads x 3 SLO profiles, with the done-when checks of the default policy as PASS/FAIL lines.

    python benchmarks/sim_grid.py --split eval              # the reported grid
    python benchmarks/sim_grid.py --split dev               # the grid to choose defaults on
    python benchmarks/sim_grid.py --split dev --find-knees  # pd's knee per workload (once, into KNEES)

Splits: ``dev`` and ``eval`` use disjoint trace windows (Azure: first / second half hour; Mooncake:
first / second quarter hour of the shipped 30 minutes) and disjoint seeds (the seed draws the
ShareGPT and agentic sessions, arrivals and think times, and spreads Mooncake's 3-s buckets).

A load is the rate scale of an open-loop trace and the number of sessions of the closed-loop
ShareGPT workload (its sessions overlap within seconds at rate 2/s, so ``n`` sets the concurrency).
Loads are multiples of ``pd``'s knee, found once per workload on the dev split (``--find-knees``: the
largest load of the workload's ladder at which ``pd``'s attainment of the 2 s / 100 ms SLO is still
>= 90 % of its attainment at the ladder's lowest load) and written into KNEES: below = 0.5x,
at = 1x, above = 1.5x.

Goodput is the number of requests within both SLOs (the request set of a cell is the same for every
policy, so this is also the attainment); a label's regret in a cell is (best - its goodput) / best
over every label of the cell; ``threshold_oracle`` is the best ``threshold_T*`` of each cell.

Writes ``benchmarks/results/sim_grid_<split>.json`` (every run, machine, date, seeds), the tables into
``benchmarks/sim_grid.md`` between the split's markers, and ``benchmarks/results/sim_grid_<split>.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_common import RESULTS, Task, mean, parallel_map, run_task
from sim_grid_report import GridSpec, build_report, plot_regret, render_markdown, splice_markdown

from sglang_ppd.core.policy import available_policies
from sglang_ppd.metrics.result import write_result_json
from sglang_ppd.router.config import RouterConfig


@dataclass(frozen=True)
class GridWorkload:
    dev: str
    eval: str
    ladder: tuple[float, ...]
    """Loads that ``--find-knees`` tries, low to high: the rate scale, or the ``{load}`` of the spec."""

    def task_args(self, split: str, load: float) -> tuple[str, float]:
        """(spec, rate scale) of a load: a closed loop's load is how many sessions it runs at once
        (``n``, the arrival rate barely matters once they overlap), an open loop's its rate."""
        spec: str = getattr(self, split)
        return (spec.format(load=round(load)), 1.0) if "{load}" in spec else (spec, load)


WORKLOADS: dict[str, GridWorkload] = {
    "sharegpt": GridWorkload(
        "sharegpt:n={load},rate=2",
        "sharegpt:n={load},rate=2",
        (500.0, 750.0, 1000.0, 1250.0, 1500.0, 1750.0, 2000.0, 2500.0),
    ),
    "azure": GridWorkload(
        "azure:start_s=0,duration_s=1800",
        "azure:start_s=1800,duration_s=1800",
        (4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0),
    ),
    "mooncake": GridWorkload(
        "mooncake:start_s=0,duration_s=900",
        "mooncake:start_s=900,duration_s=900",
        (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
    ),
    "agentic": GridWorkload(
        "agentic:n=200", "agentic:n=200", (0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.25)
    ),
}
SEEDS = {"dev": (101, 102, 103), "eval": (1, 2, 3)}
KNEES: dict[str, float] = {"sharegpt": 1750.0, "azure": 8.0, "mooncake": 0.2, "agentic": 0.08}
"""``pd``'s knee per workload, from ``--split dev --find-knees`` (see sim_grid.md for the run)."""
LOAD_FACTORS = {"below": 0.5, "at": 1.0, "above": 1.5}
SLO_PROFILES = {"2s/100ms": (2000.0, 100.0), "500ms/100ms": (500.0, 100.0), "5s/25ms": (5000.0, 25.0)}
THRESHOLDS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
KNEE_SLO = "2s/100ms"
KNEE_ATTAINMENT = 0.9


def reference_policies() -> list[str]:
    """Every registered policy; ``threshold`` runs as its tuned family instead."""
    return sorted(name for name in available_policies() if name != "threshold")


def grid_tasks(split: str, seeds: tuple[int, ...], workloads: list[str], policies: list[str]) -> list[Task]:
    out = []
    for wname in workloads:
        for load_name, factor in LOAD_FACTORS.items():
            load = round(KNEES[wname] * factor, 6)
            spec, scale = WORKLOADS[wname].task_args(split, load)
            for slo_name, slo in SLO_PROFILES.items():
                cell = {"workload": wname, "load_name": load_name, "load": load, "slo_profile": slo_name}
                for seed in seeds:
                    for p in policies:
                        out.append(Task(spec, scale, p, seed, slo=slo, label=p, extra=cell))
                    for t in THRESHOLDS:
                        params = (("max_uncached_len", t),)
                        label = f"threshold_T{t}"
                        out.append(Task(spec, scale, "threshold", seed, params, slo, label=label, extra=cell))
    return out


def knee_tasks(seeds: tuple[int, ...], workloads: list[str]) -> list[Task]:
    slo = SLO_PROFILES[KNEE_SLO]
    return [
        Task(*WORKLOADS[w].task_args("dev", load), "pd", seed, slo=slo, extra={"workload": w, "load": load})
        for w in workloads
        for load in WORKLOADS[w].ladder
        for seed in seeds
    ]


def find_knees(runs: list[dict[str, Any]], workloads: list[str]) -> dict[str, dict[str, Any]]:
    """Per workload: the attainment curve and the last load before it first drops below the bar."""
    out: dict[str, dict[str, Any]] = {}
    for w in workloads:
        curve = {}
        for load in WORKLOADS[w].ladder:
            curve[load] = mean(r["slo_attainment"] for r in runs if r["workload"] == w and r["load"] == load)
        # Relative to the lowest load: a long-context trace misses a tight TTFT SLO even unloaded.
        bar = KNEE_ATTAINMENT * (next(iter(curve.values())) or 0.0)
        knee = None
        for load, att in curve.items():
            if att is None or att < bar:
                break
            knee = load
        out[w] = {"knee": knee, "attainment": {f"{k:g}": v for k, v in curve.items()}}
    return out


def progress_printer(label: str) -> Any:
    t0 = time.perf_counter()

    def show(done: int, total: int) -> None:
        if done == total or done % max(total // 50, 1) == 0:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (total - done)
            print(
                f"\r{label}: {done}/{total} runs, {elapsed:.0f} s, ~{eta:.0f} s left ",
                end="",
                file=sys.stderr,
            )
            if done == total:
                print(file=sys.stderr)

    return show


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("dev", "eval"), required=True)
    ap.add_argument("--seeds", type=int, default=1, help="how many of the split's seeds (1-3)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    ap.add_argument("--find-knees", action="store_true", help="sweep pd over each ladder instead")
    ap.add_argument("--reuse", help="recompute the report from the runs saved in this result JSON")
    ap.add_argument("--processes", type=int, help="worker processes (default: all cores)")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    if unknown := set(workloads) - set(WORKLOADS):
        ap.error(f"unknown workloads {sorted(unknown)}; use {', '.join(WORKLOADS)}")
    seeds = SEEDS[args.split][: max(1, min(args.seeds, 3))]
    command = " ".join(["python benchmarks/sim_grid.py", *(shlex.quote(x) for x in sys.argv[1:])])
    t0 = time.perf_counter()
    if args.find_knees:
        runs = parallel_map(run_task, knee_tasks(seeds, workloads), args.processes, progress_printer("knees"))
        knees = find_knees(runs, workloads)
        for w, k in knees.items():
            print(f"{w}: knee {k['knee']}  attainment by load {k['attainment']}")
        write_result_json(RESULTS / f"sim_grid_knees_{args.split}.json", {
            "figure": "grid_knees", "split": args.split, "seeds": list(seeds), "slo_profile": KNEE_SLO,
            "bar": f"{KNEE_ATTAINMENT} x attainment at the lowest load", "knees": knees, "runs": runs,
            "command": command, "wall_s": time.perf_counter() - t0,
        })  # fmt: skip
        return
    policies = reference_policies()
    if args.reuse:
        saved = json.loads(Path(args.reuse).read_text())
        runs = saved["runs"]
    else:
        tasks = grid_tasks(args.split, seeds, workloads, policies)
        runs = parallel_map(run_task, tasks, args.processes, progress_printer(f"grid {args.split}"))
    wall_s = time.perf_counter() - t0
    spec = GridSpec(
        split=args.split,
        default_policy=RouterConfig().policy,
        policies=tuple(policies),
        thresholds=THRESHOLDS,
        slo_profiles=SLO_PROFILES,
        load_factors=LOAD_FACTORS,
        knees={w: KNEES[w] for w in workloads},
        specs={w: getattr(WORKLOADS[w], args.split) for w in workloads},
        seeds=seeds,
    )
    report = build_report(runs, spec)
    for line in report["check_lines"]:
        print(line)
    print(f"{len(runs)} runs in {wall_s:.0f} s")
    name = f"sim_grid_{args.split}"
    write_result_json(RESULTS / f"{name}.json", {
        "figure": "grid", "split": args.split, "seeds": list(seeds), "cluster": "2P2D default SimConfig",
        "workloads": spec.specs, "knees": spec.knees, "load_factors": LOAD_FACTORS,
        "slo_profiles": {k: {"ttft_ms": a, "tpot_ms": b} for k, (a, b) in SLO_PROFILES.items()},
        "thresholds": list(THRESHOLDS), "default_policy": spec.default_policy, "report": report,
        "runs": runs, "wall_s": wall_s, "command": command,
    })  # fmt: skip
    plot_regret(report, spec, RESULTS / f"{name}.png")
    doc = Path(__file__).resolve().parent / "sim_grid.md"
    doc.write_text(
        splice_markdown(doc.read_text(), args.split, render_markdown(report, spec, command, wall_s))
    )
    print(f"wrote {RESULTS / name}.json, {name}.png and the {args.split} tables of {doc.name}")


if __name__ == "__main__":
    main()
