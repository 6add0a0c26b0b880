"""The premise, from the calibrated cost model alone: how much one decode iteration at batch 32
slows when a 128-token append chunk is mixed in, versus a 2048-token prefill chunk.

    python benchmarks/sim_premise.py [--profile h100-llama31-8b] [--batch 32] [--context-len 2048]

Decode-only: ``iteration_ms([], B, B*ctx)``. Mixed: the same plus one chunk. The append chunk sits
over its conversation's history (``--history-len``, cached context read by the chunk) and the fresh
prefill chunk over nothing; both are also shown with no history so the two effects separate.
Writes ``benchmarks/results/sim_premise.json``. No randomness (seed not applicable).
"""

from __future__ import annotations

import argparse

from sim_common import RESULTS

from sglang_ppd.core.costmodel import DEFAULT_PROFILE, load_profile
from sglang_ppd.metrics.result import write_result_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context-len", type=int, default=2048, help="KV tokens per resident decode")
    ap.add_argument("--history-len", type=int, default=2048, help="cached history under the append")
    args = ap.parse_args()
    p = load_profile(args.profile)
    b, ctx = args.batch, args.batch * args.context_len
    decode = p.iteration_ms((), b, ctx)
    cases = {
        "append_128_over_history": (128, args.history_len),
        "append_128_no_history": (128, 0),
        "prefill_2048": (2048, 0),
        "prefill_8192": (8192, 0),
    }
    rows = {}
    for name, (new_len, cached_len) in cases.items():
        mixed = p.iteration_ms(((new_len, cached_len),), b, ctx)
        rows[name] = {
            "new_len": new_len,
            "cached_len": cached_len,
            "iteration_ms": mixed,
            "ratio_to_decode": mixed / decode,
            "slowdown_pct": 100 * (mixed / decode - 1),
        }
        print(f"{name:26s} {mixed:8.2f} ms  x{mixed / decode:5.2f}  (+{100 * (mixed / decode - 1):.0f}%)")
    print(f"{'decode only':26s} {decode:8.2f} ms  (batch {b}, {args.context_len} tokens each)")
    a, f = rows["append_128_over_history"], rows["prefill_2048"]
    extra_a, extra_f = a["iteration_ms"] - decode, f["iteration_ms"] - decode
    print(f"added time: append {extra_a:.1f} ms vs prefill chunk {extra_f:.1f} ms ({extra_f / extra_a:.1f}x)")
    write_result_json(RESULTS / "sim_premise.json", {
        "figure": "premise", "profile": p.name, "batch": b, "context_len": args.context_len,
        "history_len": args.history_len, "decode_only_ms": decode, "cases": rows,
        "added_ms": {"append_128_over_history": extra_a, "prefill_2048": extra_f},
        "seed": None, "command": "python benchmarks/sim_premise.py",
    })  # fmt: skip


if __name__ == "__main__":
    main()
