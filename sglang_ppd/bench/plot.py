"""Put simulator and live results on one chart: any result JSON files (``sglang-ppd sim --json``,
``sim compare`` outputs, ``sglang-ppd bench --json``), one line per (mode, policy) against load.

``python -m sglang_ppd.bench.plot RESULT.json ... --out plot.png
[--metrics turn1.ttft_ms.p95,turn2plus.ttft_ms.p95,overall.tpot_ms.p95,slo_attainment] [--x rate_scale]``

``--x policy`` draws grouped bars instead: one group per policy, sim hatched beside live.

A file without ``"mode": "live"`` is a simulator result. A file may hold one result or lists of
them (e.g. a benchmark's ``"runs"``); files with no result holding the x key are skipped with a
note, so a directory glob is fine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_METRICS = "turn1.ttft_ms.p95,turn2plus.ttft_ms.p95,overall.tpot_ms.p95,slo_attainment"


def lookup(result: dict[str, Any], dotted: str) -> float | None:
    """``turn2plus.ttft_ms.p95`` -> ``result["turn2plus"]["ttft_ms"]["p95"]`` (``None`` if absent)."""
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


BY_POLICY = "policy"


def has_x(result: Any, x_key: str) -> bool:
    if not isinstance(result, dict):
        return False
    if x_key == BY_POLICY:
        return isinstance(result.get("policy"), str) and "overall" in result
    return lookup(result, x_key) is not None


def extract(data: Any, x_key: str) -> list[dict[str, Any]]:
    """The results in one file: the file itself, or the dicts in its top-level lists."""
    if has_x(data, x_key):
        return [data]
    lists = data.values() if isinstance(data, dict) else [data] if isinstance(data, list) else []
    return [r for v in lists if isinstance(v, list) for r in v if has_x(r, x_key)]


Series = dict[tuple[str, str], list[tuple[float, float]]]


def collect(results: list[dict[str, Any]], metric: str, x_key: str) -> Series:
    """(mode, policy) -> sorted (x, mean y over seeds) points."""
    points: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        x, y = lookup(r, x_key), lookup(r, metric)
        if x is None or y is None:
            continue
        points[(str(r.get("mode", "sim")), str(r.get("policy")))][x].append(y)
    return {k: sorted((x, sum(ys) / len(ys)) for x, ys in v.items()) for k, v in sorted(points.items())}


def bars(
    ax: Any, results: list[dict[str, Any]], metric: str, policies: list[str], colours: dict[str, str]
) -> None:
    """One bar group per policy: the sim (hatched) and live means of ``metric``."""
    means: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        y = lookup(r, metric)
        if y is not None:
            means[(str(r.get("mode", "sim")), str(r.get("policy")))].append(y)
    modes = sorted({m for m, _ in means})
    width = 0.8 / max(len(modes), 1)
    for j, mode in enumerate(modes):
        ys = [sum(v) / len(v) if (v := means.get((mode, p))) else 0.0 for p in policies]
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(policies))]
        ax.bar(
            xs,
            ys,
            width,
            color=[colours[p] for p in policies],
            edgecolor="black",
            linewidth=0.5,
            alpha=0.45 if mode == "sim" else 0.9,
            hatch="//" if mode == "sim" else None,
            label=mode,
        )
    ax.set_xticks(range(len(policies)), policies, rotation=15, fontsize=7)
    ax.set_title(metric, fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def plot(results: list[dict[str, Any]], metrics: list[str], x_key: str, out: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    # One colour per policy, so its sim (dashed) and live (solid) lines pair up.
    policies = sorted({str(r.get("policy")) for r in results})
    colours = {p: f"C{i % 10}" for i, p in enumerate(policies)}
    for ax, metric in zip(axes[0], metrics, strict=True):
        if x_key == BY_POLICY:
            bars(ax, results, metric, policies, colours)
            continue
        for (mode, policy), pts in collect(results, metric, x_key).items():
            xs, ys = zip(*pts, strict=True)
            style = "-" if mode == "live" else "--"
            ax.plot(xs, ys, marker="o", linestyle=style, color=colours[policy], label=f"{policy} ({mode})")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang_ppd.bench.plot", description=__doc__)
    p.add_argument("results", nargs="+", help="result JSON files")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated dotted keys")
    p.add_argument("--x", default="rate_scale", help="dotted key for the x axis")
    p.add_argument("--title", default="sim (dashed) vs live (solid)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    results = []
    for name in args.results:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        found = extract(data, args.x)
        if not found:
            print(f"skipping {name}: no result with {args.x!r}", file=sys.stderr)
        results += found
    if not results:
        print("error: no result file holds the x key", file=sys.stderr)
        return 2
    print(f"wrote {plot(results, args.metrics.split(','), args.x, Path(args.out), args.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
