"""How fast can the replayer itself go? Drive the zero-latency stub endpoint at increasing open-loop
rates and report achieved throughput, client-side TTFT/ITL and the client's CPU per request.

``python -m sglang_ppd.bench.capacity --rates 100,200,400 --duration-s 10 --json OUT``

The stub runs in its own process; on a small machine the two share the cores, so the numbers are a
lower bound on what the client alone sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from sglang_ppd.bench.client import Api
from sglang_ppd.bench.ports import free_port
from sglang_ppd.bench.runner import BenchOptions, Replay
from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.metrics.summary import summarize
from sglang_ppd.workload import build_workload


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"stub endpoint did not listen on port {port} within {timeout_s} s")


def measure(url: str, rate: float, args: argparse.Namespace, api: Api) -> dict[str, Any]:
    num = int(rate * args.duration_s * 1.5) + 10
    spec = f"sessions:n={num},turns=1,prompt={args.prompt_len},output={args.output_len},rate={rate}"
    workload = build_workload(spec, seed=args.seed)
    opts = BenchOptions(url=url, api=api, seed=args.seed, duration_s=args.duration_s, request_timeout_s=30.0)
    result = asyncio.run(Replay(opts).run(workload))
    s = summarize(result.records, slo=Slo(), wall_s=result.wall_s, policy="stub", seed=args.seed)
    num_ok = s["num_requests"] - s["num_failed"]
    return {
        "offered_rps": rate,
        "api": api.value,
        "achieved_rps": num_ok / s["duration_s"] if s["duration_s"] else 0.0,
        "num_requests": s["num_requests"],
        "num_failed": s["num_failed"],
        "ttft_ms": s["overall"]["ttft_ms"],
        "itl_ms": s["overall"]["itl_ms"],
        "client_cpu_ms_per_request": 1000.0 * result.client_cpu_s / max(s["num_requests"], 1),
        "client_cpu_util": result.client_cpu_s / result.wall_s if result.wall_s else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang_ppd.bench.capacity", description=__doc__)
    p.add_argument("--rates", default="50,100,200,400", help="offered requests per second, comma-separated")
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--apis", default="sglang,openai")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the result JSON here")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    apis = [Api(a) for a in args.apis.split(",")]
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "sglang_ppd.bench.stub", "--port", str(port), "--incremental"]
    )
    try:
        wait_listening(port)
        rows = [measure(f"http://127.0.0.1:{port}", r, args, api) for api in apis for r in rates]
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    table = Table(title=f"replayer capacity vs the stub (prompt {args.prompt_len}, output {args.output_len})")
    for col in ("api", "offered/s", "achieved/s", "failed", "TTFT p50", "TTFT p99", "ITL p99", "CPU ms/req"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["api"], f"{r['offered_rps']:g}", f"{r['achieved_rps']:.1f}", str(r["num_failed"]),
            f"{r['ttft_ms']['p50']:.2f}", f"{r['ttft_ms']['p99']:.2f}", f"{r['itl_ms']['p99']:.2f}",
            f"{r['client_cpu_ms_per_request']:.2f}",
        )  # fmt: skip
    Console().print(table)
    if args.json:
        out = {
            "benchmark": "replayer_capacity",
            "seed": args.seed,
            "duration_s": args.duration_s,
            "prompt_len": args.prompt_len,
            "output_len": args.output_len,
            "rows": rows,
            "machine": machine_info(),
        }
        print(f"wrote {write_result_json(args.json, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
