"""Sim-vs-live agreement: one workload and seed, simulated and replayed through an emulated cluster.

    python benchmarks/sim_vs_live.py [--policies pd,ppd_deflect] [--rates 0.5,1.5,3] [--sessions 20]
        [--seed 0] [--out-dir benchmarks/results]

For each policy and load (session arrival rate): simulate the workload on the simulator's 2P2D
cluster; then launch the same cluster emulated (``python -m sglang_ppd.launch``: 2 prefill + 2 decode
``sglang-ppd emulate`` workers at time scale 1, paced by the simulator's own batch scheduler, and the
``sglang-ppd router`` in front) and replay the same workload through the router with
``sglang-ppd bench``'s replayer (closed-loop sessions on the real outputs). Both write the same
result JSON; the table compares TTFT and TPOT P50/P95 (all turns, and Turn 2+) with the relative
error (live - sim) / sim.

The workload is prefill-heavy on purpose (long prompts, short outputs): the load comes from prompt
tokens, which cost the emulator nothing in CPU, rather than from streamed tokens, which on a 2-core
machine cost the router, the emulator and the client real CPU that the simulator does not model.

Writes ``benchmarks/results/sim_vs_live.json`` (the table, machine, date, seed) and the individual
result JSONs under ``benchmarks/results/sim_vs_live/`` (plot them with ``sglang-ppd bench plot``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sglang_ppd.bench.cli import error_counts
from sglang_ppd.bench.ports import free_block
from sglang_ppd.bench.runner import BenchOptions, Replay
from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.metrics.summary import summarize
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload
from sglang_ppd.workload.spec import Workload

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOAD = (
    "sessions:n={n},rate={rate},turns=3,think_s=exp:1,prompt=uniform:2000:8000,"
    "user=uniform:100:600,output=uniform:16:64"
)
PAGE_SIZE = 16
TELEMETRY_PERIOD_MS = 50.0
"""The emulated workers' publish period (``sglang-ppd emulate --telemetry-period-ms`` default)."""
LINK_GB_S = 50.0


def sim_config() -> SimConfig:
    """The simulator's twin of :func:`launch_config`."""
    return SimConfig(
        num_prefill=2, num_decode=2, link_gbytes_per_s=LINK_GB_S, publish_period_ms=TELEMETRY_PERIOD_MS
    )


def launch_config(policy: str, slo: Slo, time_scale: float) -> dict[str, Any]:
    base = free_block(8)
    return {
        "backend": "emulated",
        "num_prefill": 2,
        "num_decode": 2,
        "base_port": base,
        "page_size": PAGE_SIZE,
        "link_bandwidth_gb_s": LINK_GB_S,
        "monitor": False,
        "emulator": {"time_scale": time_scale},
        "router": {
            "port": base + 7,
            "policy": policy,
            "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
        },
    }


@contextlib.contextmanager
def live_cluster(policy: str, slo: Slo, time_scale: float = 1.0) -> Iterator[str]:
    """An emulated 2P2D cluster + router (``python -m sglang_ppd.launch``); yields the router URL."""
    cfg = launch_config(policy, slo, time_scale)
    with tempfile.TemporaryDirectory(prefix="sim_vs_live_") as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sglang_ppd.launch",
                "--config",
                str(path),
                "--no-monitor",
                "--log-dir",
                str(Path(tmp) / "logs"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "router ready" in line:
                    break
            else:
                raise RuntimeError(f"launch exited with {proc.wait()}: {''.join(lines[-20:])}")
            yield f"http://127.0.0.1:{cfg['router']['port']}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_sim(workload: Workload, policy: str, slo: Slo, seed: int, **extra: Any) -> dict[str, Any]:
    result, _ = simulate(workload, policy, slo=slo, config=sim_config(), seed=seed)
    result.update(mode="sim", machine=machine_info(), **extra)
    return result


def run_live(
    workload: Workload,
    policy: str,
    slo: Slo,
    seed: int,
    *,
    time_scale: float = 1.0,
    max_requests: int | None = None,
    duration_s: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    with live_cluster(policy, slo, time_scale) as url:
        opts = BenchOptions(url=url, seed=seed, max_requests=max_requests, duration_s=duration_s)
        t0 = time.monotonic()
        result = asyncio.run(Replay(opts).run(workload))
        wall_s = time.monotonic() - t0
    return summarize(
        [modelled(r, time_scale) for r in result.records], slo=slo, wall_s=wall_s, policy=policy, seed=seed,
        mode="live", url=url,
        num_planned=result.num_planned, num_not_sent=result.num_planned - len(result.records),
        history_exact=result.history_exact, errors=error_counts(result.records), machine=machine_info(),
        time_scale=time_scale, **extra,
    )  # fmt: skip


def slow_motion(workload: Workload, time_scale: float) -> Workload:
    """The same workload with arrivals and think times stretched by ``time_scale``."""
    if time_scale == 1:
        return workload
    return tuple(
        dataclasses.replace(
            t,
            arrival_s=None if t.arrival_s is None else t.arrival_s * time_scale,
            think_time_s=t.think_time_s * time_scale,
        )
        for t in workload
    )


def modelled(r: RequestRecord, time_scale: float) -> RequestRecord:
    """A live record on the modelled clock: wall times divided by the emulator's time scale."""
    if time_scale == 1:
        return r

    def f(t: float | None) -> float | None:
        return None if t is None else t / time_scale

    return dataclasses.replace(
        r, arrival_s=r.arrival_s / time_scale, first_token_s=f(r.first_token_s), finish_s=f(r.finish_s),
        itl_ms=None if r.itl_ms is None else tuple(v / time_scale for v in r.itl_ms),
    )  # fmt: skip


def rel(live: float | None, sim: float | None) -> float | None:
    return None if live is None or sim is None or sim == 0 else (live - sim) / sim


def compare(sim: dict[str, Any], live: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for group in ("overall", "turn2plus"):
        for metric in ("ttft_ms", "tpot_ms"):
            for stat in ("p50", "p95"):
                s, v = sim[group][metric][stat], live[group][metric][stat]
                rows.append(
                    {
                        "group": group,
                        "metric": metric,
                        "stat": stat,
                        "sim": s,
                        "live": v,
                        "rel_err": rel(v, s),
                    }
                )
    return rows


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.0%}" if pct else f"{v:,.1f}"


def markdown(table: list[dict[str, Any]]) -> str:
    head = (
        "| policy | sessions/s | req | group | metric | sim P50 | live P50 | err | sim P95 | live P95 | err |"
    )
    out = [head, "|" + "---|" * 11]
    for t in table:
        by = {(r["group"], r["metric"], r["stat"]): r for r in t["rows"]}
        for group in ("overall", "turn2plus"):
            for metric in ("ttft_ms", "tpot_ms"):
                a, b = by[(group, metric, "p50")], by[(group, metric, "p95")]
                out.append(
                    f"| {t['policy']} | {t['rate']:g} | {t['num_requests_live']} | {group} | "
                    f"{metric[:4].upper()} | {_fmt(a['sim'])} | {_fmt(a['live'])} | "
                    f"{_fmt(a['rel_err'], True)} | {_fmt(b['sim'])} | {_fmt(b['live'])} | "
                    f"{_fmt(b['rel_err'], True)} |"
                )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="pd,ppd_deflect")
    ap.add_argument("--rates", default="0.5,1.5,3", help="session arrival rates (per second): the loads")
    ap.add_argument("--sessions", type=int, default=20, help="sessions per run (3 turns each)")
    ap.add_argument("--workload", default=WORKLOAD, help="spec template with {n} and {rate}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="live slow motion: wall s per modelled s (arrivals and think times stretched alike)",
    )
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args(argv)
    ts = args.time_scale
    tag = "" if ts == 1 else f"_ts{ts:g}"
    slo = Slo()
    out_dir = Path(args.out_dir)
    table = []
    for policy in args.policies.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            spec = args.workload.format(n=args.sessions, rate=rate)
            workload = load_workload(spec=spec, seed=args.seed)
            sim = run_sim(workload, policy, slo, args.seed, source=spec, rate_scale=1.0, load=rate)
            live = run_live(slow_motion(workload, ts), policy, slo, args.seed, time_scale=ts, source=spec,
                            rate_scale=1.0, load=rate)  # fmt: skip
            for kind, res in (("sim", sim), ("live", live)):
                write_result_json(out_dir / "sim_vs_live" / f"{kind}_{policy}_{rate:g}{tag}.json", res)
            rows = compare(sim, live)
            table.append(
                {
                    "policy": policy,
                    "rate": rate,
                    "workload": spec,
                    "num_requests_sim": sim["num_requests"],
                    "num_requests_live": live["num_requests"],
                    "num_failed_live": live["num_failed"],
                    "routes_sim": sim["routes"],
                    "routes_live": live["routes"],
                    "rows": rows,
                }
            )
            print(
                f"{policy} x{rate:g}: live {live['num_requests']} req ({live['num_failed']} failed), "
                f"routes sim {sim['routes']} live {live['routes']}",
                flush=True,
            )
    md = markdown(table)
    print(md)
    path = write_result_json(
        out_dir / f"sim_vs_live{tag}.json",
        {
            "benchmark": "sim_vs_live",
            "seed": args.seed,
            "workload_template": args.workload,
            "sessions": args.sessions,
            "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
            "cluster": {
                "sim": sim_config().model_dump(),
                "live": f"launch emulated 2P2D, time_scale {ts:g}, page_size {PAGE_SIZE}",
            },
            "command": "python benchmarks/sim_vs_live.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(),
            "table": table,
            "markdown": md,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
