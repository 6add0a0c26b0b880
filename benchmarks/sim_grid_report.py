"""The evaluation grid's report: per-cell tables, regret, the default policy's done-when checks,
the markdown section of ``sim_grid.md`` and the regret heatmap (``sim_grid.py`` runs the grid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_common import mean

REGRET_BAR = 0.03
TTFT_SLACK = 1.05
PD, CACHE_AWARE = "pd", "pd_cache_aware"


@dataclass(frozen=True)
class GridSpec:
    split: str
    default_policy: str
    policies: tuple[str, ...]
    thresholds: tuple[int, ...]
    slo_profiles: dict[str, tuple[float, float]]
    load_factors: dict[str, float]
    knees: dict[str, float]
    specs: dict[str, str]
    seeds: tuple[int, ...]

    @property
    def labels(self) -> list[str]:
        return [*self.policies, *(f"threshold_T{t}" for t in self.thresholds)]

    def cells(self) -> list[tuple[str, str, str]]:
        return [(w, ln, s) for w in self.knees for ln in self.load_factors for s in self.slo_profiles]


def cell_key(workload: str, load_name: str, slo: str) -> str:
    return f"{workload}/{load_name}/{slo}"


def _row(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Seed means of one label in one cell."""
    return {
        "good": mean((r["slo_attainment"] or 0.0) * r["num_requests"] for r in runs),
        "attainment": mean(r["slo_attainment"] for r in runs),
        "ttft_p95_ms": mean(r["overall"]["ttft_ms"]["p95"] for r in runs),
        "tpot_p95_ms": mean(r["overall"]["tpot_ms"]["p95"] for r in runs),
        "turn2plus_ttft_mean_ms": mean(r["turn2plus"]["ttft_ms"]["mean"] for r in runs),
    }


def build_report(runs: list[dict[str, Any]], spec: GridSpec) -> dict[str, Any]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        key = cell_key(r["workload"], r["load_name"], r["slo_profile"])
        grouped.setdefault(key, {}).setdefault(r["label"], []).append(r)
    table: dict[str, dict[str, Any]] = {}
    for w, ln, s in spec.cells():
        key = cell_key(w, ln, s)
        rows = {lbl: _row(grouped[key][lbl]) for lbl in spec.labels}
        good = {lbl: row["good"] or 0.0 for lbl, row in rows.items()}
        best = max(spec.labels, key=lambda lbl: good[lbl])
        oracle = max((f"threshold_T{t}" for t in spec.thresholds), key=lambda lbl: good[lbl])
        regret = {lbl: (good[best] - g) / good[best] if good[best] > 0 else 0.0 for lbl, g in good.items()}
        regret["threshold_oracle"] = regret[oracle]
        table[key] = {
            "workload": w, "load_name": ln, "slo_profile": s, "rows": rows, "best": best,
            "oracle_threshold": oracle, "regret": regret,
        }  # fmt: skip
    everything = [*spec.labels, "threshold_oracle"]
    worst = {lbl: max(c["regret"][lbl] for c in table.values()) for lbl in everything}
    checks = default_checks(table, spec, worst)
    return {"table": table, "worst_case_regret": worst, "checks": checks, "check_lines": check_lines(checks)}


def default_checks(
    table: dict[str, dict[str, Any]], spec: GridSpec, worst: dict[str, float]
) -> list[dict[str, Any]]:
    """The done-when items of the default policy, each with the cells that break it."""
    d = spec.default_policy
    worst_cell = max(table, key=lambda k: table[k]["regret"][d])
    tpot_bad, ttft_bad, ttft_na = [], [], []
    for key, c in table.items():
        rows = c["rows"]
        slo_tpot = spec.slo_profiles[c["slo_profile"]][1]
        mine, pds = rows[d]["tpot_p95_ms"], rows[PD]["tpot_p95_ms"]
        if mine is not None and mine > slo_tpot and (pds is None or pds <= slo_tpot):
            tpot_bad.append(f"{key} ({mine:.1f} ms vs pd {pds if pds is None else round(pds, 1)} ms)")
        if c["load_name"] == "below":
            a, b = rows[d]["turn2plus_ttft_mean_ms"], rows[CACHE_AWARE]["turn2plus_ttft_mean_ms"]
            if a is None or b is None:
                ttft_na.append(key)
            elif a > TTFT_SLACK * b:
                ttft_bad.append(f"{key} ({a:.0f} ms vs {b:.0f} ms, {100 * (a / b - 1):+.0f} %)")
    return [
        {
            "name": f"worst-case goodput regret <= {REGRET_BAR}",
            "passed": worst[d] <= REGRET_BAR,
            "detail": f"{worst[d]:.3f} at {worst_cell}",
        },
        {
            "name": "no cell where its TPOT P95 exceeds the SLO while pd's does not",
            "passed": not tpot_bad,
            "detail": "; ".join(tpot_bad) or "none",
        },
        {
            "name": f"below pd's knee, Turn 2+ mean TTFT within {100 * (TTFT_SLACK - 1):.0f} % "
            "of pd_cache_aware's",
            "passed": not ttft_bad,
            "detail": "; ".join(ttft_bad)
            or "none" + (f" (no Turn 2+ requests: {', '.join(ttft_na)})" if ttft_na else ""),
        },
    ]


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{'PASS' if c['passed'] else 'FAIL'}: {c['name']}: {c['detail']}" for c in checks]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render_markdown(report: dict[str, Any], spec: GridSpec, command: str, wall_s: float) -> str:
    d = spec.default_policy
    lines = [
        f"Command: `{command}` ({wall_s / 60:.1f} min on this machine; seeds {list(spec.seeds)}). "
        f"Default policy: `{d}`.",
        "",
        *(f"- **{ln}**" for ln in report["check_lines"]),
        "",
        "Worst-case regret over the grid, every label:",
        "",
        "| label | worst regret |",
        "|---|---|",
        *(
            f"| `{lbl}` | {100 * v:.1f} % |"
            for lbl, v in sorted(report["worst_case_regret"].items(), key=lambda x: x[1])
        ),
        "",
        "Every cell (goodput = share of requests within both SLOs; regret vs the cell's best label; "
        "TTFT/TPOT P95 and Turn 2+ mean TTFT in ms; seed means):",
    ]
    head = [*spec.policies, "threshold_oracle"]
    for key, c in report["table"].items():
        load = spec.knees[c["workload"]] * spec.load_factors[c["load_name"]]
        lines += [
            "",
            f"**{key}** (load {load:g}; best `{c['best']}`, oracle `{c['oracle_threshold']}`)",
            "",
            "| label | goodput | regret | TTFT P95 | TPOT P95 | Turn 2+ mean TTFT |",
            "|---|---|---|---|---|---|",
        ]
        for lbl in head:
            row = c["rows"][c["oracle_threshold"] if lbl == "threshold_oracle" else lbl]
            name = f"**`{lbl}`**" if lbl == d else f"`{lbl}`"
            lines.append(
                f"| {name} | {_fmt(row['attainment'], 3)} | {100 * c['regret'][lbl]:.1f} % | "
                f"{_fmt(row['ttft_p95_ms'])} | {_fmt(row['tpot_p95_ms'], 1)} | "
                f"{_fmt(row['turn2plus_ttft_mean_ms'])} |"
            )
    return "\n".join(lines)


def splice_markdown(doc: str, split: str, body: str) -> str:
    """``doc`` with the text between the split's markers replaced by ``body``."""
    start, end = f"<!-- grid:{split} -->", f"<!-- /grid:{split} -->"
    if start not in doc or end not in doc:
        raise ValueError(f"sim_grid.md lacks the markers {start} ... {end}")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def plot_regret(report: dict[str, Any], spec: GridSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*spec.policies, "threshold_oracle"]
    cells = list(report["table"])
    grid = [[100 * report["table"][k]["regret"][lbl] for k in cells] for lbl in labels]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * len(cells)), 0.45 * len(labels) + 2.5))
    im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=max(10.0, max(max(r) for r in grid)), aspect="auto")
    ax.set_xticks(range(len(cells)), cells, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="goodput regret vs the cell's best (%)")
    ax.set_title(f"sim_grid ({spec.split} split): regret per cell, default {spec.default_policy}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
