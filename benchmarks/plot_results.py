"""Put simulator and live result JSONs on one chart.

    python benchmarks/plot_results.py RESULT.json [RESULT.json ...] --out chart.png
        [--x load|rate_scale|policy] [--group overall|turn1|turn2plus] [--title TEXT]

Every input is the result JSON that ``sglang-ppd sim --json``, ``sglang-ppd bench --json`` and the
``benchmarks/`` scripts write (one run each; ``mode`` is ``sim`` or ``live``, ``sim`` when absent).
Four panels: TTFT P50, TTFT P95, TPOT P50, TPOT P95 of ``--group``. One series per (policy, mode):
sim dashed with open markers, live solid. ``--x load`` (or ``rate_scale``) draws lines over that
key of each result; ``--x policy`` draws grouped bars, one group per policy.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("ttft_ms", "p50"), ("ttft_ms", "p95"), ("tpot_ms", "p50"), ("tpot_ms", "p95"))


def load(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        if "overall" not in data or "policy" not in data:
            raise SystemExit(f"{p}: not a result JSON (no 'overall' / 'policy' keys)")
        out.append(data)
    return out


def value(res: dict[str, Any], group: str, metric: str, stat: str) -> float | None:
    v = res.get(group, {}).get(metric, {}).get(stat)
    return None if v is None else float(v)


def plot(results: list[dict[str, Any]], out: str, x: str, group: str, title: str | None) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        series[(r["policy"], r.get("mode", "sim"))].append(r)
    policies = sorted({p for p, _ in series})
    colors = {p: f"C{i}" for i, p in enumerate(policies)}
    for ax, (metric, stat) in zip(axes.flat, PANELS, strict=True):
        if x == "policy":
            modes = sorted({m for _, m in series})
            width = 0.8 / max(len(modes), 1)
            for j, mode in enumerate(modes):
                vals = [
                    next((value(r, group, metric, stat) for r in series.get((p, mode), [])), None)
                    for p in policies
                ]
                xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(policies))]
                ax.bar(
                    xs,
                    [v or 0.0 for v in vals],
                    width,
                    label=mode,
                    color=[colors[p] for p in policies],
                    alpha=0.45 if mode == "sim" else 0.9,
                    hatch="//" if mode == "sim" else None,
                    edgecolor="black",
                    linewidth=0.5,
                )
            ax.set_xticks(range(len(policies)), policies, rotation=15)
        else:
            for (policy, mode), rs in sorted(series.items()):
                pts = sorted((float(r[x]), value(r, group, metric, stat)) for r in rs if r.get(x) is not None)
                pts = [(a, b) for a, b in pts if b is not None]
                if not pts:
                    continue
                ax.plot(
                    [a for a, _ in pts],
                    [b for _, b in pts],
                    color=colors[policy],
                    linestyle="--" if mode == "sim" else "-",
                    marker="o",
                    markerfacecolor="none" if mode == "sim" else colors[policy],
                    label=f"{policy} ({mode})",
                )
            ax.set_xlabel(x)
        ax.set_title(f"{group} {metric.split('_')[0].upper()} {stat.upper()}")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle(title or f"sim vs live ({len(results)} runs)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="result JSON files (sim and/or live)")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--x", default="load", help="result key for the x axis, or 'policy' for bars")
    ap.add_argument("--group", default="overall", choices=("overall", "turn1", "turn2plus"))
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    path = plot(load(args.results), args.out, args.x, args.group, args.title)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
