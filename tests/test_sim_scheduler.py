"""The clock-free worker scheduler and prefix cache, driven by hand."""

from __future__ import annotations

import pytest

from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.types import Role
from sglang_ppd.sim.prefix_cache import PrefixCache
from sglang_ppd.sim.scheduler import BatchScheduler

PROFILE = load_profile("h100-llama31-8b")


def drain(s: BatchScheduler, max_steps: int = 1) -> tuple[float, dict[str, float], dict[str, float]]:
    """Run to idle; returns (elapsed ms, first-token times, finish times)."""
    now, first, done = 0.0, {}, {}
    while (it := s.next_iteration(max_steps)) is not None:
        out = s.complete(it)
        for rid in out.first_token:
            first[rid] = now + it.first_step_ms
        now += it.duration_ms
        for rid in out.finished:
            done[rid] = now
        s.audit()
    return now, first, done


def test_prefill_is_chunked_under_the_token_budget() -> None:
    p = BatchScheduler(Role.PREFILL, PROFILE)
    p.add_prefill("a", "s", 20000)
    sizes, total = [], 0.0
    while (it := p.next_iteration()) is not None:
        sizes += [n for _, n, _ in it.chunks]
        total += it.duration_ms
        out = p.complete(it)
    assert sizes == [8192, 8192, 3616]
    assert out.prefill_done == ("a",)
    assert total == pytest.approx(PROFILE.prefill_ms(20000, 0))


def test_decode_leap_equals_single_steps() -> None:
    results = []
    for max_steps in (1, 1 << 30):
        d = BatchScheduler(Role.DECODE, PROFILE, tbt_budget_ms=100.0)
        for i, (prompt, out) in enumerate([(1000, 50), (3000, 20), (200, 70)]):
            assert d.add_incoming(f"r{i}", f"s{i}", prompt, out) == ((f"r{i}", prompt),)
            d.kv_arrived(f"r{i}")
        results.append(drain(d, max_steps))
    (t1, f1, d1), (t2, f2, d2) = results
    assert t1 == pytest.approx(t2)
    assert f1 == pytest.approx(f2)
    assert d1 == pytest.approx(d2)


def test_truncate_keeps_the_step_in_flight() -> None:
    d = BatchScheduler(Role.DECODE, PROFILE)
    for i in range(8):
        d.add_incoming(f"r{i}", f"s{i}", 2000, 500)
        d.kv_arrived(f"r{i}")
    it = d.next_iteration(1 << 30)
    assert it is not None and it.num_steps == 500
    for elapsed in (0.1, it.first_step_ms, 3.3 * it.first_step_ms, 0.5 * it.duration_ms):
        cut = d.truncate(it, elapsed)
        assert cut.duration_ms >= elapsed - 1e-9
        shorter = d.truncate(it, elapsed).num_steps - 1
        if shorter >= 1:
            assert d.truncate(cut, cut.duration_ms).num_steps == cut.num_steps
            a, c = it.first_step_ms, PROFILE.step.c_kv_ms * it.num_decodes
            assert shorter * a + c * shorter * (shorter - 1) / 2 < elapsed
    assert d.truncate(it, it.duration_ms + 1) is it


def test_mixed_iterations_respect_the_tbt_budget_and_chunk_plan() -> None:
    d = BatchScheduler(Role.DECODE, PROFILE, tbt_budget_ms=40.0)
    for i in range(16):
        d.add_incoming(f"r{i}", f"s{i}", 1500, 400)
        d.kv_arrived(f"r{i}")
    d.add_local("x", "sx", 6000, 10)
    d.add_local("y", "sy", 3000, 10, chunk_len=256)
    mixed, y_sizes = 0, []
    while (it := d.next_iteration()) is not None:
        if it.chunks:
            mixed += 1
            if min(n for _, n, _ in it.chunks) > d.min_chunk_len:
                assert it.duration_ms <= 40.0 + 1e-6
            y_sizes += [n for rid, n, _ in it.chunks if rid == "y"]
        d.complete(it)
    assert mixed > 0
    assert max(y_sizes) <= 256 and sum(y_sizes) == 3000  # the plan caps y's chunks


def test_kv_capacity_makes_requests_wait_not_overflow() -> None:
    d = BatchScheduler(Role.DECODE, PROFILE, kv_capacity_tokens=5000)
    assert d.add_incoming("a", "sa", 3000, 100) == (("a", 3000),)
    assert d.add_incoming("b", "sb", 1500, 600) == ()  # 3100 + 2100 > 5000: queued
    d.kv_arrived("a")
    allocated: list[tuple[str, int]] = []
    while (it := d.next_iteration(1 << 30)) is not None:
        allocated += d.complete(it).allocated
        d.audit()
    assert allocated == [("b", 1500)]
    with pytest.raises(ValueError, match="KV tokens"):
        d.add_local("huge", "sh", 4900, 200)


def test_decode_cache_serves_the_next_turn_and_sends_only_the_rest() -> None:
    d = BatchScheduler(Role.DECODE, PROFILE, retain_cache=True)
    d.add_incoming("t1", "s", 1000, 100)
    d.kv_arrived("t1")
    drain(d, 1 << 30)
    assert d.hit_len("s", 1300) == 1100
    assert d.add_incoming("t2", "s", 1300, 50) == (("t2", 200),)
    nocache = BatchScheduler(Role.DECODE, PROFILE, retain_cache=False)
    nocache.add_incoming("t1", "s", 1000, 100)
    nocache.kv_arrived("t1")
    drain(nocache, 1 << 30)
    assert nocache.hit_len("s", 1300) == 0


def test_prefix_cache_lru_trims_the_oldest_chain_tail() -> None:
    c = PrefixCache()
    c.insert("a", 100)
    c.insert("b", 50)
    c.insert("a", 120)  # a becomes most recent
    assert c.size_tokens == 170
    assert c.evict(30) == 30
    assert c.hit_len("b", 1000, 0) == 20 and c.hit_len("a", 1000, 0) == 120
    assert c.evict(1000) == 140 and c.size_tokens == 0


def test_shared_trunk_is_pinned_and_counted_once() -> None:
    p = BatchScheduler(Role.PREFILL, PROFILE)
    for i in range(3):
        p.add_prefill(f"r{i}", f"s{i}", 1000, shared_prefix_len=400)
    drain(p)
    for i in range(3):
        p.release(f"r{i}")
    p.audit()
    assert p.cache.size_tokens == 400 + 3 * 600
    assert p.hit_len("new", 900, 400) == 400
    p.cache.evict(10**9)
    assert p.cache.size_tokens == 400 and p.hit_len("s0", 1000, 400) == 400


def test_admission_is_fcfs_across_transfers_and_local_prefills() -> None:
    d = BatchScheduler(Role.DECODE, PROFILE, kv_capacity_tokens=10_000)
    assert d.add_incoming("a", "sa", 6000, 100) == (("a", 6000),)
    d.kv_arrived("a")
    d.add_local("big", "sb", 5000, 50)  # does not fit until "a" ends
    assert d.add_incoming("small", "sc", 500, 10) == ()  # fits, but must not overtake "big"
    order: list[str] = []
    while (it := d.next_iteration(1 << 30)) is not None:
        order += [rid for rid, _, _ in it.chunks if rid not in order]
        order += [rid for rid, _ in d.complete(it).allocated]
        for rid in ("small",):
            if rid in order and rid in d._awaiting_kv:
                d.kv_arrived(rid)
        d.audit()
    assert order.index("big") < order.index("small")
