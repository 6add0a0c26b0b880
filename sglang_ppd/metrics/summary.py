"""The result JSON: vLLM-definition latency statistics, SLO attainment and goodput from records.

Every simulator run and every live replay writes this same shape, so one plotting command reads
both. Percentiles are numpy's ``linear`` method. A request meets the SLO when it finished, its TTFT
is within ``slo.ttft_ms`` and its TPOT (undefined for a single output token) within
``slo.tpot_ms``; failed requests count as misses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.record import RequestRecord

PERCENTILES = (50, 90, 95, 99)
UNKNOWN = "unknown"
"""The key for records without a route (an external router) or without a reason."""


def stats(values: Iterable[float]) -> dict[str, float | int | None]:
    """``mean``, ``p50``, ``p90``, ``p95``, ``p99`` and ``count``; ``None`` statistics when empty."""
    arr = np.fromiter(values, dtype=float)
    out: dict[str, float | int | None] = {"mean": float(arr.mean()) if arr.size else None}
    qs = np.percentile(arr, PERCENTILES, method="linear") if arr.size else [None] * len(PERCENTILES)
    for p, q in zip(PERCENTILES, qs, strict=True):
        out[f"p{p}"] = None if q is None else float(q)
    out["count"] = int(arr.size)
    return out


def meets_slo(r: RequestRecord, slo: Slo) -> bool:
    if not r.ok:
        return False
    ttft, tpot = r.ttft_ms, r.tpot_ms
    return ttft is not None and ttft <= slo.ttft_ms and (tpot is None or tpot <= slo.tpot_ms)


def group_summary(records: Sequence[RequestRecord], slo: Slo) -> dict[str, Any]:
    """Latency statistics over the successful requests of one group, plus its attainment."""
    ok = [r for r in records if r.ok]
    return {
        "count": len(records),
        "num_failed": len(records) - len(ok),
        "slo_attainment": _fraction(sum(meets_slo(r, slo) for r in records), len(records)),
        "ttft_ms": stats(v for r in ok if (v := r.ttft_ms) is not None),
        "tpot_ms": stats(v for r in ok if (v := r.tpot_ms) is not None),
        "itl_ms": stats(v for r in ok for v in (r.itl_ms or ())),
        "e2e_ms": stats(v for r in ok if (v := r.e2e_ms) is not None),
    }


def run_duration_s(records: Sequence[RequestRecord]) -> float:
    """From the first arrival to the last finish (or last arrival, for a run of failures)."""
    if not records:
        return 0.0
    start = min(r.arrival_s for r in records)
    end = max(max(r.arrival_s, r.finish_s or r.arrival_s) for r in records)
    return end - start


def summarize(
    records: Sequence[RequestRecord],
    *,
    slo: Slo,
    wall_s: float,
    policy: str,
    seed: int | None,
    duration_s: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The result JSON of one run.

    ``wall_s`` is how long the run took on the caller's clock (real time); ``duration_s`` is the
    span of the run on the records' clock (simulated or real), from the records by default, and is
    the denominator of ``goodput_rps``. ``extra`` keys (``utilization``, ``machine``, ``date``,
    ``config``...) are added as given and may not shadow a computed key.
    """
    if duration_s is None:
        duration_s = run_duration_s(records)
    num_good = sum(meets_slo(r, slo) for r in records)
    by_route: dict[str, list[RequestRecord]] = {}
    for r in records:
        by_route.setdefault(r.route or UNKNOWN, []).append(r)
    out: dict[str, Any] = {
        "policy": policy,
        "seed": seed,
        "num_requests": len(records),
        "num_failed": sum(not r.ok for r in records),
        "wall_s": wall_s,
        "duration_s": duration_s,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
        "overall": group_summary(records, slo),
        "turn1": group_summary([r for r in records if r.turn == 1], slo),
        "turn2plus": group_summary([r for r in records if r.turn > 1], slo),
        "by_route": {k: group_summary(v, slo) for k, v in sorted(by_route.items())},
        "slo_attainment": _fraction(num_good, len(records)),
        "goodput_rps": num_good / duration_s if duration_s > 0 else 0.0,
        "throughput_rps": sum(r.ok for r in records) / duration_s if duration_s > 0 else 0.0,
        "kv_bytes_transferred": sum(r.kv_bytes_transferred for r in records),
        "kv_bytes_avoided": sum(r.kv_bytes_avoided for r in records),
        "routes": dict(sorted(Counter(r.route or UNKNOWN for r in records).items())),
        "reasons": dict(sorted(Counter(r.reason or UNKNOWN for r in records).items())),
    }
    clash = sorted(set(extra) & set(out))
    if clash:
        raise ValueError(f"extra result keys {clash} would overwrite computed keys; rename them")
    out.update(extra)
    return out


def _fraction(num: int, den: int) -> float | None:
    return num / den if den else None
