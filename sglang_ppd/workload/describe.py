"""What a workload looks like: ``python -m sglang_ppd.workload (--trace FILE | --workload SPEC)``.

Prints the request and session counts, the Turn 2+ share (for Mooncake files: the inferred
conversations), arrival rate and burstiness, and length quantiles, so a trace can be checked before
it is simulated or replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import numpy as np

from sglang_ppd.helptext import HelpFormatter, plain
from sglang_ppd.workload import load_workload
from sglang_ppd.workload.spec import Workload


def _quantiles(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
    return {"mean": float(np.mean(values)), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def describe(workload: Workload) -> dict[str, Any]:
    later = [t for t in workload if t.turn > 1]
    turns = Counter(t.session_id for t in workload)
    starts = sorted(t.arrival_s for t in workload if t.arrival_s is not None)
    gaps = np.diff(starts) if len(starts) > 1 else np.zeros(0)
    span_s = starts[-1] - starts[0] if starts else 0.0
    history = sum(t.history_len for t in later)
    return {
        "num_requests": len(workload),
        "num_sessions": len(turns),
        "num_multi_turn_sessions": sum(n > 1 for n in turns.values()),
        "max_turns": max(turns.values(), default=0),
        "turn2plus_fraction": len(later) / len(workload) if workload else 0.0,
        "closed_loop_turns": sum(t.arrival_s is None for t in workload),
        "open_loop_span_s": span_s,
        "open_loop_rate_per_s": (len(starts) - 1) / span_s if span_s > 0 else None,
        "open_loop_gap_cv": float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else None,
        "input_len": _quantiles([t.input_len for t in workload]),
        "output_len": _quantiles([t.output_len for t in workload]),
        "turn2plus_new_len": _quantiles([t.new_len for t in later]),
        "turn2plus_history_fraction": history / sum(t.input_len for t in later) if later else None,
        "shared_prefix_len": max((t.shared_prefix_len for t in workload), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sglang_ppd.workload", description=plain(__doc__), formatter_class=HelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Azure CSV, Mooncake JSONL or ShareGPT turn table (detected)")
    src.add_argument("--workload", help="workload spec, e.g. sharegpt:n=200,rate=1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate-scale", type=float, default=1.0)
    p.add_argument("--limit", type=int)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        workload = load_workload(
            trace=args.trace, spec=args.workload, seed=args.seed, rate_scale=args.rate_scale, limit=args.limit
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(describe(workload), indent=2))
    return 0
