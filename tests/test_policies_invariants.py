"""Invariants every built-in policy keeps on seeded random snapshots (stale, unhealthy, approximate)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from test_policies_fixtures import PROFILE, SLO, policy

from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.types import (
    ClusterSnapshot,
    LinkSnapshot,
    RequestFeatures,
    Role,
    RouteKind,
    WorkerSnapshot,
)

ALL = ["pd", "pd_cache_aware", "always_local", "threshold", "ppd", "deflect", "ppd_deflect"]


def random_case(rng: random.Random) -> tuple[RequestFeatures, ClusterSnapshot]:
    workers = []
    for role, n in ((Role.PREFILL, rng.randrange(0, 4)), (Role.DECODE, rng.randrange(1, 5))):
        for i in range(n):
            running = rng.randrange(0, 200)
            workers.append(
                WorkerSnapshot(
                    worker_id=f"{role.value[0]}{i}",
                    role=role,
                    age_ms=rng.choice((None, 5.0, 50.0, 3000.0)),
                    num_inflight=rng.randrange(0, 50),
                    num_running=rng.choice((None, running)),
                    num_waiting=rng.randrange(0, 10),
                    queued_prefill_tokens=rng.choice((None, 0, rng.randrange(0, 100_000))),
                    kv_used_tokens=rng.randrange(0, PROFILE.kv_capacity_tokens),
                    kv_capacity_tokens=PROFILE.kv_capacity_tokens,
                    decode_iter_ms=rng.choice((None, rng.uniform(5.0, 60.0))),
                    running_context_tokens=running * rng.randrange(100, 4000),
                    num_local_prefills=rng.randrange(0, 4),
                    supports_local_prefill=rng.random() < 0.7,
                    healthy=rng.random() < 0.85,
                )
            )
    prompt_len = rng.randrange(1, 20_000)
    hits = {w.worker_id: rng.randrange(0, prompt_len + 5) for w in workers if rng.random() < 0.4}
    approx = frozenset(w for w in hits if rng.random() < 0.3)
    req = RequestFeatures("r", prompt_len, rng.randrange(1, 2000), hits, approx)
    return req, ClusterSnapshot(tuple(workers), LinkSnapshot(50e9, rng.randrange(0, 10**10), 1.0))


@pytest.mark.parametrize("name", ALL)
def test_routes_respect_health_freshness_and_capability(name: str) -> None:
    rng = random.Random(7)
    pol = policy(name)
    seen: set[RouteKind] = set()
    for _ in range(400):
        req, snap = random_case(rng)
        by_id = {w.worker_id: w for w in snap.workers}
        try:
            route = pol.decide(req, snap, SLO)
        except NoRouteError:
            healthy_d = [w for w in snap.workers if w.role is Role.DECODE and w.healthy]
            healthy_p = [w for w in snap.workers if w.role is Role.PREFILL and w.healthy]
            capable = [
                d for d in healthy_d if d.supports_local_prefill and d.is_fresh(SLO.max_telemetry_age_ms)
            ]
            assert not healthy_d or (not healthy_p and not capable)
            continue
        assert route == pol.decide(req, snap, SLO)  # deterministic
        seen.add(route.kind)
        d = by_id[route.decode_worker]
        assert d.role is Role.DECODE and d.healthy
        if route.kind is RouteKind.PD:
            p = by_id[route.prefill_worker or ""]
            assert p.role is Role.PREFILL and p.healthy
            continue
        assert d.supports_local_prefill and d.is_fresh(SLO.max_telemetry_age_ms), route
        if route.kind is RouteKind.LOCAL:  # a local append needs an exact resident prefix
            assert req.hit_len(d.worker_id) > 0 and d.worker_id not in req.approx_workers, route
        else:
            assert name in ("deflect", "ppd_deflect") or route.reason == "no_prefill", route
        plan = route.chunk_plan
        assert plan is not None and plan.chunk_len >= 1
        assert (
            plan.chunk_len * plan.num_chunks
            >= req.uncached_len(d.worker_id)
            > plan.chunk_len * (plan.num_chunks - 1)
            or d.worker_id in req.approx_workers
        )
    assert RouteKind.PD in seen


@pytest.mark.parametrize("name", ["ppd", "deflect", "ppd_deflect"])
def test_a_longer_prefill_queue_never_moves_a_request_back_to_pd(name: str) -> None:
    # Only the PD path's cost depends on P's queue, and it grows with it: once a request leaves
    # the PD path as the queue grows, it must not come back.
    rng = random.Random(11)
    pol = policy(name)
    queues = [0, 1000, 4000, 16_000, 64_000, 256_000, 1_000_000]
    flips = 0
    for _ in range(150):
        req, snap = random_case(rng)
        if not any(w.role is Role.PREFILL and w.healthy for w in snap.workers):
            continue
        off_pd = []
        for q in queues:
            workers = tuple(
                replace(w, queued_prefill_tokens=q, age_ms=5.0) if w.role is Role.PREFILL else w
                for w in snap.workers
            )
            try:
                route = pol.decide(req, replace(snap, workers=workers), SLO)
            except NoRouteError:
                break
            off_pd.append(route.kind is not RouteKind.PD)
        assert off_pd == sorted(off_pd), off_pd
        flips += any(off_pd) and not all(off_pd)
    assert flips > 0  # the property was exercised, not vacuously true


@pytest.mark.parametrize("name", ["ppd", "ppd_deflect"])
def test_a_higher_tpot_weight_never_moves_a_request_off_pd(name: str) -> None:
    rng = random.Random(13)
    pol = policy(name)
    weights = [0.0, 0.5, 1.0, 4.0, 16.0, 64.0]
    flips = 0
    for _ in range(200):
        req, snap = random_case(rng)
        off_pd = []
        for w in weights:
            try:
                route = pol.decide(req, snap, replace(SLO, w_tpot=w))
            except NoRouteError:
                break
            off_pd.append(route.kind is not RouteKind.PD and route.reason != "no_prefill")
        assert off_pd == sorted(off_pd, reverse=True), off_pd
        flips += any(off_pd) and not all(off_pd)
    assert flips > 0
