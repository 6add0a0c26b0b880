"""Shared helpers of the ``benchmarks/sim_*.py`` figure scripts: one simulation per task, in parallel.

Every script writes ``benchmarks/results/sim_<figure>.json`` with the machine, date, seeds and the
exact workload specs, through :func:`sglang_ppd.metrics.result.write_result_json`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sglang_ppd.core.types import Slo
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Task:
    spec: str
    rate_scale: float
    policy: str
    seed: int
    params: tuple[tuple[str, Any], ...] = ()
    slo: tuple[float, float] = (Slo().ttft_ms, Slo().tpot_ms)
    label: str = ""
    config: tuple[tuple[str, Any], ...] = ()
    """SimConfig overrides (default: the simulator's default cluster)."""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers the figures use (the full result JSON is much larger)."""
    keep = (
        "policy",
        "seed",
        "num_requests",
        "num_failed",
        "slo_attainment",
        "goodput_rps",
        "kv_bytes_transferred",
        "kv_bytes_avoided",
        "routes",
        "reasons",
        "utilization",
        "duration_s",
    )
    out = {k: result[k] for k in keep}
    for group in ("overall", "turn1", "turn2plus"):
        g = result[group]
        out[group] = {
            "count": g["count"],
            "slo_attainment": g["slo_attainment"],
            "ttft_ms": g["ttft_ms"],
            "tpot_ms": g["tpot_ms"],
        }
    out["wall_s"] = result["wall_s"]
    return out


def run_task(task: Task) -> dict[str, Any]:
    workload = load_workload(spec=task.spec, seed=task.seed, rate_scale=task.rate_scale)
    slo = Slo(ttft_ms=task.slo[0], tpot_ms=task.slo[1])
    result, _ = simulate(
        workload,
        task.policy,
        params=dict(task.params),
        slo=slo,
        config=SimConfig(**dict(task.config)),
        seed=task.seed,
    )
    out = compact(result)
    out.update(
        spec=task.spec,
        rate_scale=task.rate_scale,
        params=dict(task.params),
        slo={"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
        config=dict(task.config),
        label=task.label or task.policy,
        **task.extra,
    )
    return out


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    processes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """``map`` over worker processes (each simulation is single-threaded and independent), results
    in input order; ``progress(done, total)`` after each item completes."""
    items = list(items)
    n = processes or os.cpu_count() or 1
    report = progress or (lambda done, total: None)
    if n <= 1 or len(items) <= 1:
        out = []
        for x in items:
            out.append(fn(x))
            report(len(out), len(items))
        return out
    results: dict[int, R] = {}
    with multiprocessing.get_context("fork").Pool(n) as pool:
        for i, r in pool.imap_unordered(_Indexed(fn), enumerate(items), chunksize=1):
            results[i] = r
            report(len(results), len(items))
    return [results[i] for i in range(len(items))]


@dataclass(frozen=True)
class _Indexed:
    """``fn`` applied to the item of an (index, item) pair, keeping the index (picklable, unlike a
    closure, for the worker processes)."""

    fn: Callable[[Any], Any]

    def __call__(self, pair: tuple[int, Any]) -> tuple[int, Any]:
        return pair[0], self.fn(pair[1])


def mean(values: Iterable[float | None]) -> float | None:
    nums = [v for v in values if v is not None]
    return sum(nums) / len(nums) if nums else None


Table = dict[str, dict[str, dict[str, Any]]]
"""policy -> f"{rate:g}" -> row of seed means."""


def seed_mean_table(
    runs: list[dict[str, Any]],
    policies: Iterable[str],
    rates: list[float],
    row: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> Table:
    """One ``row`` per (policy, rate), computed over that cell's runs (one per seed)."""
    table: Table = {}
    for policy in policies:
        for rate in rates:
            rs = [r for r in runs if r["policy"] == policy and r["rate_scale"] == rate]
            table.setdefault(policy, {})[f"{rate:g}"] = row(rs)
    return table


def plot_by_rate(
    axes: Any, table: Table, policies: Iterable[str], rates: list[float], keys: Iterable[str], xlabel: str
) -> None:
    """One panel per key: each policy's seed mean against the rate."""
    for policy in policies:
        for ax, key in zip(axes, keys, strict=True):
            ax.plot(rates, [table[policy][f"{r:g}"][key] for r in rates], marker="o", label=policy)
            ax.set_title(key)
            ax.set_xlabel(xlabel)
            ax.grid(True, alpha=0.3)
