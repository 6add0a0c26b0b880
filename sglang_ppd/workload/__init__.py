"""Workloads: real trace readers and synthetic multi-turn sessions, all producing :class:`TurnSpec`s.

- :func:`load_trace` reads an Azure CSV, a Mooncake JSONL or a ShareGPT turn table (detected).
- :func:`build_workload` builds a workload from a ``--workload`` spec string (see ``grammar``).
- :func:`load_workload` is the one call a CLI needs for ``--trace FILE`` / ``--workload SPEC``.
"""

from __future__ import annotations

from sglang_ppd.workload.grammar import build_workload
from sglang_ppd.workload.loader import load_trace
from sglang_ppd.workload.spec import TurnSpec, Workload


def load_workload(
    *,
    trace: str | None = None,
    spec: str | None = None,
    seed: int = 0,
    rate_scale: float = 1.0,
    limit: int | None = None,
) -> Workload:
    """Exactly one of ``trace`` (a file) or ``spec`` (a ``--workload`` string)."""
    if (trace is None) == (spec is None):
        raise ValueError("give exactly one of --trace FILE or --workload SPEC")
    if trace is not None:
        return load_trace(trace, limit=limit, rate_scale=rate_scale, seed=seed)
    assert spec is not None
    return build_workload(spec, seed=seed, rate_scale=rate_scale, limit=limit)


__all__ = ["TurnSpec", "Workload", "build_workload", "load_trace", "load_workload"]
