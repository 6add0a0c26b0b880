"""One simulation run end to end: workload + policy + cluster -> the result JSON (a dict)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import load_policy
from sglang_ppd.core.types import Slo
from sglang_ppd.metrics.summary import summarize
from sglang_ppd.sim.cluster import SimCluster
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.engine import SimOutcome, Simulation
from sglang_ppd.workload.spec import TurnSpec


def simulate(
    workload: Sequence[TurnSpec],
    policy_name: str,
    *,
    params: Mapping[str, Any] | None = None,
    slo: Slo | None = None,
    config: SimConfig | None = None,
    seed: int = 0,
    check_invariants: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], SimOutcome]:
    """Simulate and summarize. The dict is the ``--json`` result; the outcome keeps the records."""
    slo = slo or Slo()
    config = config or SimConfig()
    profile = load_profile(config.profile)
    policy = load_policy(policy_name, params, profile)
    decode_cache = type(policy).needs_decode_cache if config.decode_cache is None else config.decode_cache
    tbt_budget_ms = config.tbt_budget_ms or slo.tpot_ms
    cluster = SimCluster.build(
        config, profile, decode_cache=decode_cache, tbt_budget_ms=tbt_budget_ms, seed=seed
    )
    t0 = time.perf_counter()  # wall time of the run, reported only; the simulation never reads it
    outcome = Simulation(workload, policy, slo, cluster, check_invariants=check_invariants).run(progress)
    wall_s = time.perf_counter() - t0
    span_s = max(outcome.end_s, 1e-9)
    result = summarize(
        outcome.records,
        slo=slo,
        wall_s=wall_s,
        policy=policy_name,
        seed=seed,
        params=dict(params or {}),
        config=config.model_dump(),
        decode_cache=decode_cache,
        sim={
            "simulated_s": outcome.end_s,
            "num_events": outcome.num_events,
            "requests_per_wall_s": len(outcome.records) / wall_s if wall_s > 0 else None,
            "tbt_budget_ms": tbt_budget_ms,
            "link_bytes": outcome.link_bytes,
        },
        utilization={wid: busy / 1000.0 / span_s for wid, busy in outcome.busy_ms.items()},
    )
    return result, outcome
