"""Router replicas in the simulator: the load balancer, each replica's books, peer sync."""

from __future__ import annotations

from typing import Any

from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.replicas import (
    DISPATCH,
    FINISH,
    Books,
    RouterTier,
)
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload


def test_roundrobin_rotates_and_session_hash_is_sticky() -> None:
    rr = RouterTier(3, "roundrobin", None)
    assert [rr.pick(f"s{i}") for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    sticky = RouterTier(4, "session", None)
    picks = {s: sticky.pick(s) for s in (f"s{i}" for i in range(40))}
    assert all(sticky.pick(s) == r for s, r in picks.items())
    assert len(set(picks.values())) > 1


def test_leastconn_takes_the_fewest_open_and_rotates_among_ties() -> None:
    lc = RouterTier(3, "leastconn", None)
    assert [lc.pick("s") for _ in range(3)] == [0, 1, 2]
    lc.close(1)
    assert lc.pick("s") == 1  # the only one with a free slot
    lc.close(0)
    lc.close(2)
    assert [lc.pick("s"), lc.pick("s")] == [2, 0]  # ties go round, starting after the last pick


def test_without_sync_a_replica_sees_only_its_own_requests() -> None:
    tier = RouterTier(2, "roundrobin", None)
    books = [Books(), Books()]
    tier.record(1.0, books, 0, DISPATCH, "a", 100, 10)
    assert (books[0].num_inflight, books[1].num_inflight) == (1, 0)
    assert books[1].lifecycle.since().num_dispatched == 0 and tier.num_synced_ops == 0


def test_a_synced_peer_request_counts_once_across_a_telemetry_sample() -> None:
    """A peer's dispatch delivered before a sample is inside that sample; one delivered after the
    sample is a dispatch since it. Applying both late would count the first one twice."""
    tier = RouterTier(2, "roundrobin", 5.0)
    books = [Books(), Books()]
    tier.record(1.000, books, 0, DISPATCH, "before", 100, 10)  # delivered at 1.005
    tier.record(1.008, books, 0, DISPATCH, "after", 200, 10)  # delivered at 1.013
    peer = books[1]
    assert peer.num_inflight == 0  # nothing delivered until the peer looks
    peer.on_sample(1.010)  # the sample taken at 1.010 already holds "before"
    peer.deliver(1.020)
    assert peer.num_inflight == 2
    since = peer.lifecycle.since()
    assert since.num_dispatched == 1 and since.dispatched_context_len == 200
    tier.record(1.030, books, 0, FINISH, "before")
    peer.deliver(1.034)
    assert peer.num_inflight == 2  # not delivered yet
    peer.deliver(1.035)
    assert peer.num_inflight == 1 and peer.lifecycle.since().num_finished == 1


def _run(**config: Any) -> dict[str, Any]:
    workload = load_workload(spec="sharegpt:n=150,rate=1", seed=3, rate_scale=0.5)
    result, _ = simulate(workload, "ppd_deflect", config=SimConfig(**config), seed=3)
    return result


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return r["goodput_rps"], r["routes"], r["overall"]["ttft_ms"]["p95"], r["overall"]["tpot_ms"]["p95"]


def test_instant_peer_sync_makes_four_replicas_decide_as_one() -> None:
    """With every change delivered at once, each replica's books equal the single router's, so the
    run is the same decision for decision; without sync the replicas' views differ and so does it."""
    one = _run()
    assert _key(_run(num_routers=4, peer_sync_ms=0.0)) == _key(one)
    assert _key(_run(num_routers=4, lb_balance="leastconn", peer_sync_ms=0.0)) == _key(one)
    assert _key(_run(num_routers=4)) != _key(one)
