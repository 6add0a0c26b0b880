"""SLO attainment curves and latency-vs-load plots of the 2P2D GPU runs, from their per-request records.

    python benchmarks/gpu/cluster_2p2d_slo.py benchmarks/results/gpu_2p2d [--tpot-slo-ms 30]

Reads ``DIR/runs/*.records.jsonl`` (written by ``sglang-ppd bench --records`` during
``cluster_2p2d.py run``) and ``DIR/extras.json`` (device, date). A request meets the SLO when it
succeeded, its TTFT is within the TTFT SLO and its TPOT within ``--tpot-slo-ms`` (vLLM's
definition; attainment counts failed requests as misses). The TTFT SLO is swept, not picked: every
router's whole curve is drawn, so no single threshold decides the comparison. The TPOT SLO defaults
to the TBT budget the decode workers were started with (``--ppd-tbt-slo-ms 30``), fixed before any
run. Writes ``DIR/slo.json`` (attainment at a few TTFT SLOs), ``DIR/slo_curves.png`` and
``DIR/latency_vs_load.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import read_records_jsonl
from sglang_ppd.metrics.summary import meets_slo, stats

ROUTERS = ("ppd_deflect", "pd", "rust", "pd_cache_aware", "threshold")
LABELS = {"rust": "Rust sglang_router (PD)"}
TABLE_TTFT_SLOS_MS = (250.0, 500.0, 1000.0, 2000.0)

Records = list[RequestRecord]


def load_runs(d: Path) -> dict[tuple[str, float, str], Records]:
    runs = {}
    for f in sorted((d / "runs").glob("*.records.jsonl")):
        wl, load, router = f.name.removesuffix(".records.jsonl").split("_", 2)
        runs[(wl, float(load.removeprefix("x")), router)] = read_records_jsonl(f)
    if not runs:
        raise SystemExit(f"no runs/*.records.jsonl under {d}: run cluster_2p2d.py run with this code first")
    return runs


def attainment(rows: Records, ttft_slo_ms: float, tpot_slo_ms: float) -> float:
    slo = Slo(ttft_ms=ttft_slo_ms, tpot_ms=tpot_slo_ms)
    return sum(meets_slo(r, slo) for r in rows) / len(rows) if rows else float("nan")


def p95(rows: Records, metric: str, turn2: bool | None = None) -> float | None:
    """P95 of ``ttft_ms`` or ``tpot_ms`` over the successful requests (of one turn group)."""
    picked = (r for r in rows if r.ok and (turn2 is None or (r.turn > 1) == turn2))
    return stats(v for r in picked if (v := getattr(r, metric)) is not None)["p95"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--tpot-slo-ms", type=float, default=30.0)
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(a.dir)
    extras = json.loads((a.dir / "extras.json").read_text()) if (a.dir / "extras.json").exists() else {}
    device = ", ".join(sorted(set(extras.get("device") or ["unknown device"])))
    seed = json.loads(next((a.dir / "runs").glob("*[!l].json")).read_text()).get("seed")
    stamp = f"{len(extras.get('device') or [])} x {device}; {extras.get('date', '?')}; seed {seed}"
    workloads = sorted({k[0] for k in runs})
    loads = sorted({k[1] for k in runs})
    grid = np.geomspace(20.0, 10000.0, 80)

    table = []
    for (wl, load, router), rows in sorted(runs.items()):
        att: dict[str, float] = {
            f"ttft_{s:g}ms": attainment(rows, s, a.tpot_slo_ms) for s in TABLE_TTFT_SLOS_MS
        }
        table.append({"workload": wl, "load": load, "router": router, "num_requests": len(rows),
                      "attainment": att, "ttft_p95_ms": p95(rows, "ttft_ms"),
                      "t2_ttft_p95_ms": p95(rows, "ttft_ms", True),
                      "tpot_p95_ms": p95(rows, "tpot_ms")})  # fmt: skip

    fig, axes = plt.subplots(len(workloads), len(loads), figsize=(4.2 * len(loads), 3.4 * len(workloads)),
                             squeeze=False, sharey=True)  # fmt: skip
    for i, wl in enumerate(workloads):
        for j, load in enumerate(loads):
            ax = axes[i][j]
            for router in ROUTERS:
                cell = runs.get((wl, load, router))
                if cell:
                    ys = [attainment(cell, s, a.tpot_slo_ms) for s in grid]
                    lw = 2.0 if router == "ppd_deflect" else 1.2
                    ax.plot(grid, ys, label=LABELS.get(router, router), lw=lw)
            ax.set_xscale("log")
            ax.set_title(f"{wl} x{load:g}", fontsize=10)
            ax.grid(alpha=0.3)
            if i == len(workloads) - 1:
                ax.set_xlabel("TTFT SLO (ms)")
            if j == 0:
                ax.set_ylabel(f"SLO attainment (TPOT <= {a.tpot_slo_ms:g} ms)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"2P2D on real GPUs: attainment vs TTFT SLO\n{stamp}", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.dir / "slo_curves.png", dpi=110)

    fig, axes = plt.subplots(2, len(workloads), figsize=(5.2 * len(workloads), 6.4), squeeze=False)
    for j, wl in enumerate(workloads):
        for router in ROUTERS:
            pts = [(load, runs[(wl, load, router)]) for load in loads if (wl, load, router) in runs]
            xs = [load for load, _ in pts]
            turn2 = True if wl == "sharegpt" else None  # multi-turn: the Turn 2+ tail is the claim

            def ttft_key(rows: Records, turn2: bool | None = turn2) -> float | None:
                return p95(rows, "ttft_ms", turn2)

            label = LABELS.get(router, router)
            axes[0][j].plot(xs, [ttft_key(rows) for _, rows in pts], "o-", label=label)
            axes[1][j].plot(xs, [p95(rows, "tpot_ms") for _, rows in pts], "o-", label=label)
        axes[0][j].set_title(f"{wl}: {'Turn 2+ ' if wl == 'sharegpt' else ''}TTFT P95 (ms)", fontsize=10)
        axes[0][j].set_yscale("log")
        axes[1][j].set_title(f"{wl}: TPOT P95 (ms)", fontsize=10)
        axes[1][j].set_xlabel("load (rate scale)")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks(loads)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"2P2D on real GPUs: latency vs load\n{stamp}", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.dir / "latency_vs_load.png", dpi=110)

    cmd = f"python benchmarks/gpu/cluster_2p2d_slo.py {a.dir} --tpot-slo-ms {a.tpot_slo_ms:g}"
    out = {"benchmark": "gpu_2p2d_slo", "device": extras.get("device"), "date": extras.get("date"),
           "seed": seed, "tpot_slo_ms": a.tpot_slo_ms, "rows": table, "command": cmd}  # fmt: skip
    (a.dir / "slo.json").write_text(json.dumps(out, indent=1) + "\n")
    head = " | ".join(f"TTFT<={s:g}" for s in TABLE_TTFT_SLOS_MS)
    print(f"| workload | load | router | {head} |\n|---|---|---|" + "---|" * len(TABLE_TTFT_SLOS_MS))
    for (wl, load, router), rows in sorted(runs.items()):
        cells = " | ".join(f"{attainment(rows, s, a.tpot_slo_ms):.2f}" for s in TABLE_TTFT_SLOS_MS)
        print(f"| {wl} | x{load:g} | {router} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
