"""Policy comparison live: pd, pd_cache_aware, threshold and ppd_deflect on the emulated 2P2D cluster,
next to the simulator on the identical workload.

    python benchmarks/live_compare.py [--workloads multiturn,azure] [--policies pd,...] [--seed 0]

Two workloads, each replayed through ``python -m sglang_ppd.launch`` (emulated 2P2D + our router)
with ``sglang-ppd bench``'s replayer, and simulated:

- ``multiturn``: closed-loop synthetic sessions with long histories (4 turns, 2-8k-token first
  prompts, short outputs), real time (time scale 1). PPD's premise: Turn 2+ history is on D.
- ``azure``: the busiest stretch of the shipped Azure conversation trace (open loop, single turn),
  its arrival rate scaled until the prefill workers saturate in the peaks. Output lengths are capped
  (``--azure-max-output``) and the cluster runs in slow motion (``--azure-time-scale``: wall seconds
  per modelled second; arrivals stretched alike): a 2-core machine cannot stream tens of requests per
  second in real time without its own CPU becoming the bottleneck. Live times are divided by the
  time scale, so every number is in modelled milliseconds, like the simulator's.

Writes ``benchmarks/results/live_compare_<workload>.json`` (table, machine, date, seed) and each run's result
JSON under ``benchmarks/results/live_compare/`` (``sglang-ppd bench plot`` charts them).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from sim_vs_live import RESULTS, run_live, run_sim, sim_config, slow_motion

from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.workload import load_workload
from sglang_ppd.workload.spec import Workload

MULTITURN = (
    "sessions:n=30,rate=2,turns=4,think_s=exp:2,prompt=uniform:2000:8000,user=uniform:100:600,"
    "output=uniform:16:64"
)
AZURE = "azure:start_s=1866,duration_s={duration}"
"""The trace's busiest 90 s of prompt tokens (737 requests, 12.2k prompt tokens/s) start at 1866 s."""
POLICIES = ("pd", "pd_cache_aware", "threshold", "ppd_deflect")


def azure_workload(duration_s: float, rate_scale: float, max_output: int, seed: int) -> Workload:
    w = load_workload(spec=AZURE.format(duration=duration_s), seed=seed, rate_scale=rate_scale)
    return tuple(dataclasses.replace(t, output_len=min(t.output_len, max_output)) for t in w)


def row(res: dict[str, Any]) -> dict[str, Any]:
    def g(group: str, metric: str, stat: str) -> float | None:
        v: float | None = res[group][metric][stat]
        return v

    n = res["num_requests"] or 1
    return {
        "mode": res["mode"],
        "policy": res["policy"],
        "num_requests": res["num_requests"],
        "num_failed": res["num_failed"],
        "ttft_p50_ms": g("overall", "ttft_ms", "p50"),
        "ttft_p95_ms": g("overall", "ttft_ms", "p95"),
        "t1_ttft_p95_ms": g("turn1", "ttft_ms", "p95"),
        "t2_ttft_p50_ms": g("turn2plus", "ttft_ms", "p50"),
        "t2_ttft_p95_ms": g("turn2plus", "ttft_ms", "p95"),
        "tpot_p50_ms": g("overall", "tpot_ms", "p50"),
        "tpot_p95_ms": g("overall", "tpot_ms", "p95"),
        "slo_attainment": res["slo_attainment"],
        "route_fractions": {k: v / n for k, v in res["routes"].items()},
    }


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def markdown(rows: list[dict[str, Any]], multiturn: bool) -> str:
    cols = ["policy", "mode", "req", "TTFT P50", "TTFT P95"]
    cols += ["T2+ TTFT P50", "T2+ TTFT P95"] if multiturn else []
    cols += ["TPOT P50", "TPOT P95", "SLO att.", "routes"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            r["policy"],
            r["mode"],
            f"{r['num_requests']}" + (f" ({r['num_failed']} failed)" if r["num_failed"] else ""),
            _ms(r["ttft_p50_ms"]),
            _ms(r["ttft_p95_ms"]),
        ]
        if multiturn:
            cells += [_ms(r["t2_ttft_p50_ms"]), _ms(r["t2_ttft_p95_ms"])]
        att = r["slo_attainment"]
        cells += [
            _ms(r["tpot_p50_ms"]),
            _ms(r["tpot_p95_ms"]),
            "-" if att is None else f"{att:.3f}",
            " ".join(f"{k} {v:.0%}" for k, v in sorted(r["route_fractions"].items())),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="multiturn,azure")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--multiturn", default=MULTITURN, help="the multi-turn workload spec")
    ap.add_argument(
        "--multiturn-time-scale", type=float, default=1.0, help="live slow motion (1 = real time)"
    )
    ap.add_argument("--tag", default="", help="suffix of the output names (keeps another run's files)")
    ap.add_argument("--azure-duration-s", type=float, default=90.0, help="trace window (trace seconds)")
    ap.add_argument("--azure-rate-scale", type=float, default=6.0)
    ap.add_argument("--azure-max-output", type=int, default=32)
    ap.add_argument("--azure-time-scale", type=float, default=4.0)
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args(argv)
    slo = Slo()
    out_dir = Path(args.out_dir)
    report: dict[str, Any] = {
        "benchmark": "live_compare",
        "seed": args.seed,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
        "cluster": {"sim": sim_config().model_dump(), "live": "launch emulated 2P2D, page_size 16"},
        "command": "python benchmarks/live_compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
    }
    for name in args.workloads.split(","):
        if name == "multiturn":
            spec, workload, time_scale = (
                args.multiturn,
                load_workload(spec=args.multiturn, seed=args.seed),
                args.multiturn_time_scale,
            )
        elif name == "azure":
            spec = (
                f"{AZURE.format(duration=args.azure_duration_s)} x{args.azure_rate_scale:g}, "
                f"output capped at {args.azure_max_output}"
            )
            workload = azure_workload(
                args.azure_duration_s, args.azure_rate_scale, args.azure_max_output, args.seed
            )
            time_scale = args.azure_time_scale
        else:
            raise SystemExit(f"unknown workload {name!r}: multiturn or azure")
        rows = []
        for policy in args.policies.split(","):
            extra = {"source": spec, "workload_name": name}
            sim = run_sim(workload, policy, slo, args.seed, **extra)
            live = run_live(
                slow_motion(workload, time_scale), policy, slo, args.seed, time_scale=time_scale, **extra
            )
            for kind, res in (("sim", sim), ("live", live)):
                write_result_json(out_dir / "live_compare" / f"{name}_{kind}_{policy}{args.tag}.json", res)
            rows += [row(sim), row(live)]
            print(
                f"{name} {policy}: live {live['num_requests']} req ({live['num_failed']} failed) "
                f"TTFT p95 sim {_ms(sim['overall']['ttft_ms']['p95'])} live "
                f"{_ms(live['overall']['ttft_ms']['p95'])} ms; routes live {live['routes']}",
                flush=True,
            )
        md = markdown(rows, multiturn=name == "multiturn")
        print(md, flush=True)
        path = write_result_json(
            out_dir / f"live_compare_{name}{args.tag}.json",
            {**report, "workload": name, "spec": spec, "time_scale": time_scale,
             "num_requests": len(workload), "rows": rows, "markdown": md},
        )  # fmt: skip
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
