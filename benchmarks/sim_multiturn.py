"""Multi-turn ShareGPT sessions on 2P2D (H100 Llama-8B profile): ppd vs pd vs pd_cache_aware.

    python benchmarks/sim_multiturn.py [--sessions 2000] [--rates 0.2,...] [--seeds 3]

Closed-loop sessions sampled from the shipped ShareGPT table (``sharegpt:n=N,rate=R``: session
arrivals Poisson at R/s, think time exp(5 s)), default SLO (TTFT 2 s, TPOT 100 ms). For each
session rate, each policy, each seed: one simulation. The *breaking load* is the lowest rate whose
seed-mean ``pd`` Turn 2+ P95 TTFT exceeds the TTFT SLO; the comparison is reported there (and at
every rate). Writes ``benchmarks/results/sim_multiturn.json`` and ``sim_multiturn.png``.
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

POLICIES = ("pd", "pd_cache_aware", "ppd")


def _row(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "t2_ttft_mean_ms": mean(r["turn2plus"]["ttft_ms"]["mean"] for r in rs),
        "t2_ttft_p95_ms": mean(r["turn2plus"]["ttft_ms"]["p95"] for r in rs),
        "t1_ttft_p95_ms": mean(r["turn1"]["ttft_ms"]["p95"] for r in rs),
        "tpot_p95_ms": mean(r["overall"]["tpot_ms"]["p95"] for r in rs),
        "slo_attainment": mean(r["slo_attainment"] for r in rs),
        "goodput_rps": mean(r["goodput_rps"] for r in rs),
        "local_fraction": mean(r["routes"].get("local", 0) / r["num_requests"] for r in rs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--rates", default="0.15,0.2,0.25,0.3,0.4,0.5,0.75,1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--max-new-tokens", type=int, default=None,
        help="max_new_tokens the router sees (default: the true output length); writes *_mnt<N> files",
    )  # fmt: skip
    args = ap.parse_args()
    config = (("max_new_tokens", args.max_new_tokens),) if args.max_new_tokens else ()
    name = "sim_multiturn" + (f"_mnt{args.max_new_tokens}" if args.max_new_tokens else "")
    rates = [float(x) for x in args.rates.split(",")]
    spec = f"sharegpt:n={args.sessions},rate=1"
    tasks = [
        Task(spec, rate, p, seed, config=config)
        for rate in rates
        for p in POLICIES
        for seed in range(args.seeds)
    ]
    runs = parallel_map(run_task, tasks)
    table = seed_mean_table(runs, POLICIES, rates, _row)
    slo = Slo()
    breaking = next((r for r in rates if (table["pd"][f"{r:g}"]["t2_ttft_p95_ms"] or 0) > slo.ttft_ms), None)
    claims: dict[str, Any] = {"breaking_rate": breaking}
    if breaking is not None:
        k = f"{breaking:g}"
        pd, ca, ppd = table["pd"][k], table["pd_cache_aware"][k], table["ppd"][k]
        claims.update(
            ppd_t2_mean_reduction_vs_pd=1 - ppd["t2_ttft_mean_ms"] / pd["t2_ttft_mean_ms"],
            ppd_t2_mean_reduction_vs_pd_cache_aware=1 - ppd["t2_ttft_mean_ms"] / ca["t2_ttft_mean_ms"],
            ppd_tpot_p95_vs_pd=ppd["tpot_p95_ms"] / pd["tpot_p95_ms"] - 1,
        )
    for policy in POLICIES:
        for rate in rates:
            row = table[policy][f"{rate:g}"]
            print(
                f"{policy:15s} rate {rate:<5g} T2 mean {row['t2_ttft_mean_ms']:8.0f}",
                f"T2 p95 {row['t2_ttft_p95_ms']:8.0f}  T1 p95 {row['t1_ttft_p95_ms']:7.0f}",
                f"TPOT p95 {row['tpot_p95_ms']:5.1f}  att {row['slo_attainment']:.3f}",
                f"local {row['local_fraction']:.2f}",
            )
    print(claims)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    keys = ("t2_ttft_mean_ms", "t2_ttft_p95_ms", "tpot_p95_ms")
    plot_by_rate(axes, table, POLICIES, rates, keys, "session arrival rate (1/s)")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[1].axhline(slo.ttft_ms, color="grey", ls="--", lw=1)
    if breaking is not None:
        for ax in axes:
            ax.axvline(breaking, color="red", ls=":", lw=1)
    axes[0].legend()
    fig.suptitle(f"ShareGPT sessions ({spec}, x rate), 2P2D h100-llama31-8b, {args.seeds} seeds")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    write_result_json(RESULTS / f"{name}.json", {
        "figure": "multiturn", "workload": spec, "rates": rates, "seeds": list(range(args.seeds)),
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms}, "cluster": "2P2D default SimConfig",
        "config_overrides": dict(config),
        "table": table, "claims": claims, "runs": runs,
        "command": f"python benchmarks/sim_multiturn.py --sessions {args.sessions} --rates {args.rates} "
                   f"--seeds {args.seeds}" + (f" --max-new-tokens {m}" if (m := args.max_new_tokens) else ""),
    })  # fmt: skip


if __name__ == "__main__":
    main()
