"""A router process's counters as plain JSON, and their sum over processes (``--processes N``).

Each process counts only the requests the kernel gave it. ``/metrics`` and ``/stats`` of any
process report the sum over all of them, so a scrape does not depend on which process answers:
counters and histogram buckets add up, the recent-sample windows are pooled for percentiles.
A peer's state is untrusted input like any other (a bug or a stale socket must not poison the
sum): a malformed one raises ``ValueError`` and the caller counts that peer as unreachable.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from sglang_ppd.router.metrics import WINDOW, Histogram, RouterMetrics

_COUNTERS = ("route_decisions", "requests", "upstream_errors", "rejected")
_SCALARS = ("retries", "client_aborts", "kv_bytes_transferred", "kv_bytes_avoided", "slo_total",
            "slo_ttft_ok", "slo_tpot_ok", "slo_both_ok", "slo_tpot_total")  # fmt: skip


def _hists(m: RouterMetrics) -> dict[str, Histogram]:
    return {
        "ttft/1": m.ttft["1"], "ttft/2+": m.ttft["2+"], "tpot/1": m.tpot["1"], "tpot/2+": m.tpot["2+"],
        "decision": m.decision, "prefix_lookup": m.prefix_lookup,
    }  # fmt: skip


def metrics_state(m: RouterMetrics) -> dict[str, Any]:
    """Everything ``RouterMetrics.render`` and ``/stats`` read, as JSON-able data."""
    state: dict[str, Any] = {name: [[*_key(k), n] for k, n in getattr(m, name).items()] for name in _COUNTERS}
    state.update({name: getattr(m, name) for name in _SCALARS})
    state["histograms"] = {
        name: {"counts": h.counts, "sum": h.sum, "count": h.count, "recent": list(h.recent)}
        for name, h in _hists(m).items()
    }
    return state


def _key(k: Any) -> list[Any]:
    return list(k) if isinstance(k, tuple) else [k]


def _count(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"not a count: {x!r}")
    return x


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x < 0:
        raise ValueError(f"not a non-negative number: {x!r}")
    return float(x)


def merge_metrics(states: list[dict[str, Any]]) -> RouterMetrics:
    """One ``RouterMetrics`` holding the sum of ``states``; ``ValueError`` if any is malformed."""
    out = RouterMetrics()
    for h in _hists(out).values():  # every process's recent window, pooled
        h.recent = deque(maxlen=WINDOW * max(len(states), 1))
    try:
        for s in states:
            _add(out, s)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed router state: {type(exc).__name__}: {exc}") from None
    return out


def _add(out: RouterMetrics, s: dict[str, Any]) -> None:
    counters: dict[str, Counter[Any]] = {}
    for name in _COUNTERS:
        c: Counter[Any] = Counter()
        for *key, n in s[name]:
            if name == "requests":
                key_t: Any = (str(key[0]), _count(key[1]))
            elif name == "route_decisions":
                key_t = (str(key[0]), str(key[1]))
            else:
                key_t = str(key[0])
            c[key_t] += _count(n)
        counters[name] = c
    scalars = {name: _count(s[name]) for name in _SCALARS}
    hists = {}
    for name, h in _hists(out).items():
        src = s["histograms"][name]
        counts = [_count(n) for n in src["counts"]]
        if len(counts) != len(h.counts):
            raise ValueError(f"histogram {name} has {len(counts)} buckets, expected {len(h.counts)}")
        hists[name] = (counts, _number(src["sum"]), _count(src["count"]), [_number(v) for v in src["recent"]])
    # Only a state that passed every check above is added (no half-merged peer).
    for name, c in counters.items():
        getattr(out, name).update(c)
    for name, n in scalars.items():
        setattr(out, name, getattr(out, name) + n)
    for name, h in _hists(out).items():
        counts, total, count, recent = hists[name]
        h.counts = [a + b for a, b in zip(h.counts, counts, strict=True)]
        h.sum += total
        h.count += count
        h.recent.extend(recent[-WINDOW:])
