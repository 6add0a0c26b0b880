"""``sglang-ppd bench`` (also ``python -m sglang_ppd.bench``): replay a workload against any SGLang
``/generate`` or OpenAI ``/v1/completions`` endpoint and write the simulator's result JSON."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter

from sglang_ppd.bench import plot
from sglang_ppd.bench.client import Api
from sglang_ppd.bench.console import ProgressReport, make_console, summary
from sglang_ppd.bench.endpoint import kv_bytes_during, read_router
from sglang_ppd.bench.parallel import run_parallel
from sglang_ppd.bench.runner import BenchOptions, Replay, num_planned
from sglang_ppd.bench.tokens import DEFAULT_VOCAB_SIZE
from sglang_ppd.core.types import Slo
from sglang_ppd.helptext import HelpFormatter, plain
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import machine_info, write_records_jsonl, write_result_json
from sglang_ppd.metrics.summary import summarize
from sglang_ppd.workload import load_workload

USAGE = """sglang-ppd bench --url URL (--trace FILE | --workload SPEC) [--api sglang|openai] [--seed N]
                  [--rate-scale X] [--limit N] [--max-requests N] [--duration-s S] [--slo-ttft-ms MS]
                  [--slo-tpot-ms MS] [--workers N] [--label NAME] [--json OUT] [--records JSONL]
       sglang-ppd bench plot RESULT.json ... --out PNG [--metrics a.b.c,...] [--x rate_scale]"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sglang-ppd bench", usage=USAGE, description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("--url", required=True, help="base URL of the endpoint, e.g. http://127.0.0.1:30000")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Azure CSV, Mooncake JSONL or ShareGPT turn table (detected)")
    src.add_argument(
        "--workload",
        help="workload spec, e.g. sharegpt:n=20,rate=2: n counts sessions (conversations of 1 to hundreds "
        "of turns) for sharegpt: and sessions:, requests for azure: and mooncake: "
        "(`python -m sglang_ppd.workload --workload SPEC` says how many requests a spec makes)",
    )
    p.add_argument("--api", choices=[a.value for a in Api], default=Api.SGLANG.value)
    p.add_argument("--model", help="model name for --api openai (default: the first of GET /v1/models)")
    p.add_argument("--seed", type=int, default=0, help="workload and prompt-token seed")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    p.add_argument("--limit", type=int, help="take at most N requests of the workload")
    p.add_argument("--max-requests", type=int, help="send at most N requests")
    p.add_argument(
        "--duration-s", type=float, help="send nothing new after S seconds (requests in flight then finish)"
    )
    p.add_argument("--request-timeout-s", type=float, default=300.0, help="per request, whole stream")
    p.add_argument("--slo-ttft-ms", type=float, default=Slo().ttft_ms)
    p.add_argument("--slo-tpot-ms", type=float, default=Slo().tpot_ms)
    p.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="prompt ids are drawn below this"
    )
    p.add_argument("--max-connections", type=int, default=0, help="HTTP connection pool size (0 = unbounded)")
    p.add_argument(
        "--workers", type=int, default=1, help="client processes (when one cannot keep up: see client_cpu_s)"
    )
    p.add_argument(
        "--label",
        help="what is measured (the `policy` key of the JSON); default: the router's policy from its /stats, "
        "else 'endpoint'",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--records", help="also write every request's record here (JSON lines)")
    return p


def _check(args: argparse.Namespace) -> None:
    positive = {
        "--rate-scale": args.rate_scale,
        "--slo-ttft-ms": args.slo_ttft_ms,
        "--slo-tpot-ms": args.slo_tpot_ms,
        "--request-timeout-s": args.request_timeout_s,
        "--limit": args.limit,
        "--max-requests": args.max_requests,
        "--duration-s": args.duration_s,
    }
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise ValueError(f"{flag} must be > 0, got {value}")
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.max_connections < 0:
        raise ValueError("--max-connections must be >= 0")
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url must start with http:// or https://, got {args.url!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return plot.main(argv[1:])
    args = build_parser().parse_args(argv)
    console = make_console()
    try:
        _check(args)
        workload = load_workload(
            trace=args.trace, spec=args.workload, seed=args.seed, rate_scale=args.rate_scale, limit=args.limit
        )
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    opts = BenchOptions(
        url=args.url, api=Api(args.api), seed=args.seed, model=args.model, max_requests=args.max_requests,
        duration_s=args.duration_s, request_timeout_s=args.request_timeout_s, vocab_size=args.vocab_size,
        max_connections=args.max_connections,
    )  # fmt: skip
    before = read_router(args.url)
    label = args.label or before.policy or "endpoint"
    total = num_planned(workload, args.max_requests)
    bound = "" if args.duration_s is None else f"; sending stops after {args.duration_s:g} s"
    console.print(
        f"replaying up to {total:,} requests ({len({t.session_id for t in workload}):,} sessions) of "
        f"{args.trace or args.workload} against {args.url} ({label}){bound}",
        highlight=False,
    )
    interrupted = False
    with ProgressReport(console, total, enabled=not args.no_progress) as progress:

        def done(r: RequestRecord) -> None:
            progress.finished(r.ok)

        if args.workers > 1:
            source = {"trace": args.trace, "spec": args.workload, "seed": args.seed}
            source |= {"rate_scale": args.rate_scale, "limit": args.limit}
            try:
                result, interrupted = run_parallel(args.workers, source, workload, opts, on_done=done)
            except RuntimeError as exc:
                console.print(f"[red]error:[/red] {exc}")
                return 1
        else:
            replay = Replay(opts, on_done=done)
            try:
                result = asyncio.run(replay.run(workload))
            except KeyboardInterrupt:
                # Ctrl-C: keep what finished; the requests in flight are lost.
                result = replay.result
                interrupted = True
    kv_bytes = kv_bytes_during(before, read_router(args.url))
    slo = Slo(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms)
    s = summarize(
        result.records, slo=slo, wall_s=result.wall_s, policy=label, seed=args.seed,
        source=args.trace or args.workload, rate_scale=args.rate_scale, url=args.url, api=args.api,
        model=result.model, client_cpu_s=result.client_cpu_s,
        num_planned=result.num_planned, num_not_sent=result.num_planned - len(result.records),
        history_exact=result.history_exact, errors=error_counts(result.records), mode="live",
        cached_prompt_fraction=cached_fractions(result.records),
        interrupted=interrupted, client_workers=args.workers, machine=machine_info(),
    )  # fmt: skip
    # The records carry no byte counts in a live run: the router counted them.
    s["kv_bytes_transferred"], s["kv_bytes_avoided"] = kv_bytes["transferred"], kv_bytes["avoided"]
    console.print(summary(s))
    if args.json:
        console.print(f"wrote {write_result_json(args.json, s)}")
    if args.records:
        console.print(f"wrote {write_records_jsonl(args.records, result.records)}")
    if interrupted:
        return 130  # the shell's code for "stopped by SIGINT", so scripts see the run did not finish
    return 0 if any(r.ok for r in result.records) else 1


def cached_fractions(records: list[RequestRecord]) -> dict[str, float | None]:
    """Prompt tokens the server reported as cached (``cached_tokens``) over all prompt tokens, by turn
    group: on Turn 2+ this shows whether the replayed history really hit the server's prefix cache."""
    out: dict[str, float | None] = {}
    for name, group in (("turn1", [r for r in records if r.ok and r.turn == 1]),
                        ("turn2plus", [r for r in records if r.ok and r.turn > 1])):  # fmt: skip
        total = sum(r.input_len for r in group)
        out[name] = sum(r.cached_len for r in group) / total if total else None
    return out


def error_counts(records: list[RequestRecord]) -> dict[str, int]:
    """Failures by message; long numbers (ids, rooms) become N so that like errors group together."""
    counts = Counter(re.sub(r"\d{3,}", "N", r.error or "no output")[:200] for r in records if not r.ok)
    return dict(counts.most_common())
