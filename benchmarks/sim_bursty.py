"""Bursty load: the Azure LLM conversation trace (the whole hour, open loop), scaled until the
prefill workers saturate; ``deflect`` (and ``ppd_deflect``) vs ``pd`` on 2P2D.

    python benchmarks/sim_bursty.py [--rates 4,6,8,10,12,14] [--seeds 3]

The trace's arrival rate drifts over the hour (index of dispersion 94 at 300 s), so at a given
scale the peaks saturate P well before the mean does. Seeds only move the workers' telemetry
publish phases (the trace is fixed). Default SLO (TTFT 2 s, TPOT 100 ms). Writes
``benchmarks/results/sim_bursty.json`` and ``sim_bursty.png``.
"""

from __future__ import annotations

import argparse
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sim_common import (  # noqa: E402
    RESULTS,
    Task,
    mean,
    parallel_map,
    plot_by_rate,
    run_task,
    seed_mean_table,
)

from sglang_ppd.core.types import Slo  # noqa: E402
from sglang_ppd.metrics.result import write_result_json  # noqa: E402

POLICIES = ("pd", "deflect", "ppd_deflect")
SPEC = "azure:"


def _p_util(run: dict[str, Any]) -> float:
    u = run["utilization"]
    return (u["p0"] + u["p1"]) / 2


def _row(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ttft_p95_ms": mean(r["overall"]["ttft_ms"]["p95"] for r in rs),
        "ttft_mean_ms": mean(r["overall"]["ttft_ms"]["mean"] for r in rs),
        "tpot_p95_ms": mean(r["overall"]["tpot_ms"]["p95"] for r in rs),
        "slo_attainment": mean(r["slo_attainment"] for r in rs),
        "goodput_rps": mean(r["goodput_rps"] for r in rs),
        "deflect_fraction": mean(r["routes"].get("deflect", 0) / r["num_requests"] for r in rs),
        "prefill_utilization": mean(_p_util(r) for r in rs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="4,6,8,10,12,14")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    tasks = [Task(SPEC, rate, p, seed) for rate in rates for p in POLICIES for seed in range(args.seeds)]
    runs = parallel_map(run_task, tasks)
    table = seed_mean_table(runs, POLICIES, rates, _row)
    slo = Slo()
    saturated = [r for r in rates if (table["pd"][f"{r:g}"]["ttft_p95_ms"] or 0) > slo.ttft_ms]
    claims: dict[str, Any] = {"first_rate_pd_p95_over_slo": saturated[0] if saturated else None, "at": {}}
    for rate in saturated:
        k = f"{rate:g}"
        pd, de = table["pd"][k], table["deflect"][k]
        claims["at"][k] = {
            "deflect_ttft_p95_reduction_vs_pd": 1 - de["ttft_p95_ms"] / pd["ttft_p95_ms"],
            "slo_attainment_pd": pd["slo_attainment"], "slo_attainment_deflect": de["slo_attainment"],
            "tpot_p95_pd": pd["tpot_p95_ms"], "tpot_p95_deflect": de["tpot_p95_ms"],
        }  # fmt: skip
    for policy in POLICIES:
        for rate in rates:
            row = table[policy][f"{rate:g}"]
            print(
                f"{policy:12s} x{rate:<4g} TTFT p95 {row['ttft_p95_ms']:8.0f}",
                f"mean {row['ttft_mean_ms']:7.0f}  TPOT p95 {row['tpot_p95_ms']:5.1f}",
                f"att {row['slo_attainment']:.3f}  deflected {row['deflect_fraction']:.2f}",
                f"P util {row['prefill_utilization']:.2f}",
            )
    print(claims)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    keys = ("ttft_p95_ms", "slo_attainment", "tpot_p95_ms")
    plot_by_rate(axes, table, POLICIES, rates, keys, "Azure conv arrival-rate scale")
    axes[0].set_yscale("log")
    axes[0].axhline(slo.ttft_ms, color="grey", ls="--", lw=1)
    axes[0].legend()
    fig.suptitle(f"Azure conv 2023 hour (19,366 requests), 2P2D h100-llama31-8b, {args.seeds} seeds")
    fig.tight_layout()
    fig.savefig(RESULTS / "sim_bursty.png", dpi=110)
    write_result_json(RESULTS / "sim_bursty.json", {
        "figure": "bursty", "workload": SPEC, "rates": rates, "seeds": list(range(args.seeds)),
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms}, "cluster": "2P2D default SimConfig",
        "table": table, "claims": claims, "runs": runs,
        "command": f"python benchmarks/sim_bursty.py --rates {args.rates} --seeds {args.seeds}",
    })  # fmt: skip


if __name__ == "__main__":
    main()
