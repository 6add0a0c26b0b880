"""``sglang-ppd sim`` and ``sglang-ppd sim compare`` (also ``python -m sglang_ppd.sim``).

A stable interface: it is run on traces we do not have, so every bad input is a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sglang_ppd.core.config import ConfigError
from sglang_ppd.core.policy import parse_param_overrides
from sglang_ppd.core.types import Slo
from sglang_ppd.helptext import HelpFormatter, policies_epilog
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import write_result_json
from sglang_ppd.sim.config import load_sim_config
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload

USAGE = """sglang-ppd sim [--config CONFIG] (--trace FILE | --workload SPEC) --policy NAME [--param k=v ...]
                [--seed N] [--rate-scale X] [--limit N] [--slo-ttft-ms MS] [--slo-tpot-ms MS] [--json OUT]
       sglang-ppd sim compare --policies a,b,c --rate-scales r1,r2,... [--seeds 3] --out DIR [same flags]"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="cluster YAML (default: 2P2D, h100-llama31-8b, 50 GB/s links)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Azure CSV, Mooncake JSONL or ShareGPT turn table (detected)")
    src.add_argument("--workload", help="workload spec, e.g. sharegpt:n=200,rate=1 (see sglang_ppd.workload)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="k=v",
        help="policy parameter (repeatable); in compare, POLICY.k=v applies to one policy only",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="workload and simulator seed")
    parser.add_argument("--limit", type=int, default=None, help="at most N requests")
    parser.add_argument("--slo-ttft-ms", type=float, default=Slo().ttft_ms, help="a request meets the SLO")
    parser.add_argument("--slo-tpot-ms", type=float, default=Slo().tpot_ms, help="... when both hold")


def build_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    epilog = policies_epilog()
    run = argparse.ArgumentParser(
        prog="sglang-ppd sim", usage=USAGE, description="Simulate a PD cluster.", epilog=epilog,
        formatter_class=HelpFormatter,
    )  # fmt: skip
    _common(run)
    run.add_argument("--policy", required=True, help="a policy name (listed below)")
    run.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    run.add_argument("--json", help="write the result JSON here")
    cmp = argparse.ArgumentParser(
        prog="sglang-ppd sim compare", usage=USAGE, description="Sweep policies x loads x seeds.",
        epilog=epilog, formatter_class=HelpFormatter,
    )  # fmt: skip
    _common(cmp)
    cmp.add_argument("--policies", required=True, help="comma-separated policy names (listed below)")
    cmp.add_argument("--rate-scales", default="1", help="comma-separated arrival-rate multipliers")
    cmp.add_argument("--seeds", type=int, default=3, help="number of seeds, from --seed on")
    cmp.add_argument("--out", required=True, help="directory for the JSON files and PNG plots")
    return run, cmp


def _slo(args: argparse.Namespace) -> Slo:
    if not (args.slo_ttft_ms > 0 and args.slo_tpot_ms > 0):
        raise ConfigError("--slo-ttft-ms and --slo-tpot-ms must be > 0")
    return Slo(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms)


def _workload(args: argparse.Namespace, seed: int, rate_scale: float) -> Any:
    if not rate_scale > 0:
        raise ConfigError(f"--rate-scale must be > 0, got {rate_scale}")
    return load_workload(
        trace=args.trace, spec=args.workload, seed=seed, rate_scale=rate_scale, limit=args.limit
    )


def run_one(args: argparse.Namespace, console: Console) -> int:
    config = load_sim_config(args.config)
    workload = _workload(args, args.seed, args.rate_scale)
    params = parse_param_overrides(args.param)
    with _progress(console) as bar:
        task = bar.add_task(f"simulating {args.policy}", total=len(workload))
        result, outcome = simulate(
            workload, args.policy, params=params, slo=_slo(args), config=config, seed=args.seed,
            progress=lambda n: bar.update(task, completed=n),
        )  # fmt: skip
        bar.update(task, completed=len(workload))
    result["rate_scale"] = args.rate_scale
    result["source"] = args.trace or args.workload
    title = f"{result['source']}, rate scale x{args.rate_scale:g}, seed {args.seed}"
    console.print(summary_table([result], title=title))
    if args.json:
        write_result_json(args.json, result)
        console.print(f"wrote {args.json}")
    return report_failures(args.policy, outcome.records)


def report_failures(policy: str, records: Sequence[RequestRecord]) -> int:
    """Say how many requests failed and why the first did (a policy bug shows there: a route to a
    worker that does not exist); 1 when none succeeded, so a script notices."""
    bad = [r for r in records if r.error is not None]
    if bad:
        print(f"sglang-ppd sim: {policy}: {len(bad):,} of {len(records):,} requests failed; the first "
              f"({bad[0].request_id}): {bad[0].error}", file=sys.stderr)  # fmt: skip
    return 1 if records and len(bad) == len(records) else 0


def _progress(console: Console) -> Progress:
    # Off when piped: rich would end it with a bare newline, ahead of any error message.
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )  # fmt: skip


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def summary_table(results: list[dict[str, Any]], title: str) -> Table:
    slo = results[0]["slo"] if results else {"ttft_ms": Slo().ttft_ms, "tpot_ms": Slo().tpot_ms}
    t = Table(
        title=title,
        caption=f"SLO: a request meets it when TTFT <= {slo['ttft_ms']:,.0f} ms and TPOT <= "
        f"{slo['tpot_ms']:,.0f} ms. Rate scale: the workload's arrival rate multiplied by it.",
    )
    for col in ("policy", "rate scale", "TTFT p95 T1 ms", "TTFT p95 T2+ ms", "TTFT mean T2+ ms",
                "TPOT p95 ms", "SLO met", "goodput req/s", "routes"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("policy", "routes") else "right")
    for r in results:
        att = r.get("slo_attainment")
        t.add_row(
            r["policy"], f"x{r.get('rate_scale', 1.0):g}",
            _ms(r["turn1"]["ttft_ms"]["p95"]), _ms(r["turn2plus"]["ttft_ms"]["p95"]),
            _ms(r["turn2plus"]["ttft_ms"]["mean"]), _ms(r["overall"]["tpot_ms"]["p95"]),
            "-" if att is None else f"{att:.1%}", f"{r['goodput_rps']:.2f}",
            " ".join(f"{k}:{v:.0f}" for k, v in r["routes"].items()),
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    run_parser, cmp_parser = build_parsers()
    try:
        if args_in and args_in[0] == "compare":
            from sglang_ppd.sim.compare import run_compare

            return run_compare(cmp_parser.parse_args(args_in[1:]), console)
        return run_one(run_parser.parse_args(args_in), console)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"sglang-ppd sim: error: {exc}", file=sys.stderr)
        return 2
