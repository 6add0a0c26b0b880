"""The trade-off frontier of the grid cells where the default policy misses a done-when target.

    python benchmarks/sim_frontier.py --reuse benchmarks/results/sim_grid_eval.json

Reads the runs a ``sim_grid.py`` run saved (no new simulations), recomputes the report, and for every
cell named in a FAIL line of the default policy's checks plots each label of the reference set as a
point: goodput (share of requests within both SLOs) against the metric the target is about (TPOT
P95 for the TPOT check, TTFT P95 for the regret check, Turn 2+ mean TTFT for the below-knee check),
with the target drawn in. The Pareto frontier (labels no other label beats on both axes) is listed
per cell, so a reader sees whether any label meets the target and what it pays for it, that is,
which constraint binds. Writes ``results/sim_frontier_<split>.png`` and prints the frontier tables
as markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sim_common import RESULTS
from sim_grid_report import PD, TTFT_SLACK, GridSpec, build_report

METRICS = {
    "tpot": ("tpot_p95_ms", "TPOT P95 (ms)"),
    "regret": ("ttft_p95_ms", "TTFT P95 (ms)"),
    "turn2": ("turn2plus_ttft_mean_ms", "Turn 2+ mean TTFT (ms)"),
}


def failing_cells(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(cell, check kind) for every cell a FAIL line of the default's checks names."""
    out: list[tuple[str, str]] = []
    for kind, check in zip(("regret", "tpot", "turn2"), report["checks"], strict=True):
        if check["passed"]:
            continue
        for key in report["table"]:
            if f"{key} " in check["detail"] + " " and (key, kind) not in out:
                out.append((key, kind))
    return out


def frontier(rows: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """Labels not dominated on (goodput higher, metric lower), best goodput first."""
    pts = {lbl: (r["good"], r[metric]) for lbl, r in rows.items() if r[metric] is not None}
    keep = [
        a
        for a, (g, m) in pts.items()
        if not any(g2 >= g and m2 <= m and (g2, m2) != (g, m) for g2, m2 in pts.values())
    ]
    return sorted(keep, key=lambda lbl: -pts[lbl][0])


def target_line(spec: GridSpec, cell: dict[str, Any], kind: str) -> float | None:
    if kind == "tpot":
        return spec.slo_profiles[cell["slo_profile"]][1]
    if kind == "turn2":
        base = cell["rows"]["pd_cache_aware"]["turn2plus_ttft_mean_ms"]
        return None if base is None else TTFT_SLACK * base
    return None


def plot(report: dict[str, Any], spec: GridSpec, cells: list[tuple[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4.6), squeeze=False)
    for ax, (key, kind) in zip(axes[0], cells, strict=True):
        cell = report["table"][key]
        metric, xlabel = METRICS[kind]
        rows = cell["rows"]
        n = max(r["good"] for r in rows.values()) / max(1e-9, max(r["attainment"] for r in rows.values()))
        front = set(frontier(rows, metric))
        for lbl, r in rows.items():
            if r[metric] is None:
                continue
            is_default = lbl == spec.default_policy
            color = "tab:red" if is_default else ("tab:blue" if lbl in front else "0.6")
            ax.scatter(r[metric], r["good"] / n, color=color, s=40 if is_default else 18, zorder=3)
            if is_default or lbl in front or lbl == PD:
                ax.annotate(
                    lbl, (r[metric], r["good"] / n), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        line = target_line(spec, cell, kind)
        if line is not None:
            ax.axvline(line, color="k", linestyle="--", linewidth=0.8, label="target")
            ax.legend(fontsize=7)
        if kind != "tpot":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("goodput (share within both SLOs)")
        ax.set_title(f"{key}", fontsize=9)
    fig.suptitle(
        f"sim_grid {spec.split}: the failing cells' labels (red: {spec.default_policy}; blue: frontier)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any], spec: GridSpec, cells: list[tuple[str, str]]) -> str:
    out = []
    for key, kind in cells:
        cell = report["table"][key]
        metric, xlabel = METRICS[kind]
        rows = cell["rows"]
        line = target_line(spec, cell, kind)
        out.append(f"**{key}** ({kind} check; target {'—' if line is None else f'{line:.1f} ms'})\n")
        out.append(f"| frontier label | goodput | {xlabel} |")
        out.append("|---|---|---|")
        for lbl in frontier(rows, metric):
            mark = f"**`{lbl}`**" if lbl == spec.default_policy else f"`{lbl}`"
            out.append(f"| {mark} | {rows[lbl]['attainment']:.3f} | {rows[lbl][metric]:,.1f} |")
        d = rows[spec.default_policy]
        out.append(f"| (default `{spec.default_policy}`) | {d['attainment']:.3f} | {d[metric]:,.1f} |\n")
    return "\n".join(out)


def spec_of(saved: dict[str, Any]) -> GridSpec:
    """The grid's spec from what ``sim_grid.py`` saved with its runs."""
    labels = {r["label"] for r in saved["runs"]}
    return GridSpec(
        split=saved["split"],
        default_policy=saved["default_policy"],
        policies=tuple(sorted(lbl for lbl in labels if not lbl.startswith("threshold_T"))),
        thresholds=tuple(saved["thresholds"]),
        slo_profiles={k: (v["ttft_ms"], v["tpot_ms"]) for k, v in saved["slo_profiles"].items()},
        load_factors=saved["load_factors"],
        knees=saved["knees"],
        specs=saved["workloads"],
        seeds=tuple(saved["seeds"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse", required=True, help="a sim_grid result JSON")
    args = ap.parse_args()
    saved = json.loads(Path(args.reuse).read_text())
    spec = spec_of(saved)
    report = build_report(saved["runs"], spec)
    cells = failing_cells(report)
    if not cells:
        print("every check passes: no frontier to show")
        return
    path = RESULTS / f"sim_frontier_{spec.split}.png"
    plot(report, spec, cells, path)
    print(markdown(report, spec, cells))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
