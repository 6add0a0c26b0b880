"""The per-iteration local-prefill budget, the iteration-time model and the KV admission seam."""

from __future__ import annotations

import pytest

from sglang_ppd.worker.admission import LocalEntry, LocalQueue
from sglang_ppd.worker.budget import BudgetPolicy, IterationClock, IterationModel, IterationSample


def _model_with(decode_ms: float, overhead_ms: float, ms_per_token: float) -> IterationModel:
    m = IterationModel(prior_ms_per_token=1.0, prior_overhead_ms=50.0)
    for _ in range(20):
        m.add(IterationSample(decode_ms, 0, 32))
    for tokens in (64, 128, 256, 512, 1024):
        m.add(IterationSample(decode_ms + overhead_ms + ms_per_token * tokens, tokens, 32))
    return m


def test_model_recovers_the_mixed_cost_line() -> None:
    m = _model_with(decode_ms=8.0, overhead_ms=3.0, ms_per_token=0.02)
    overhead, slope = m.cost_line()
    assert overhead == pytest.approx(3.0, rel=1e-6)
    assert slope == pytest.approx(0.02, rel=1e-6)
    assert m.decode_ms == pytest.approx(8.0)


def test_model_uses_the_prior_until_enough_mixed_samples() -> None:
    m = IterationModel(prior_ms_per_token=0.5, prior_overhead_ms=4.0)
    m.add(IterationSample(10.0, 100, 8))
    m.add(IterationSample(10.0, 100, 0))  # an idle-server prefill is no mixing sample
    assert m.cost_line() == (4.0, 0.5)


def test_one_outlier_iteration_does_not_collapse_the_estimates() -> None:
    m = _model_with(decode_ms=8.0, overhead_ms=3.0, ms_per_token=0.02)
    m.add(IterationSample(400.0, 0, 32))  # a decode step that also absorbed request intake
    m.add(IterationSample(500.0, 128, 32))
    assert m.decode_ms == pytest.approx(8.0)
    overhead, slope = m.cost_line()
    assert overhead == pytest.approx(3.0, abs=0.5)
    assert slope == pytest.approx(0.02, rel=0.1)


def test_a_single_chunk_size_keeps_the_prior_overhead_and_lets_the_budget_move() -> None:
    m = IterationModel(prior_ms_per_token=1.0, prior_overhead_ms=2.0)
    m.add(IterationSample(2.0, 0, 4))
    for _ in range(8):
        m.add(IterationSample(2.0 + 12.0, 128, 4))  # 12 ms over decode at one chunk size
    overhead, slope = m.cost_line()
    assert overhead == pytest.approx(2.0)
    assert slope == pytest.approx(10.0 / 128)
    assert BudgetPolicy(30.0, 128, 4096).tokens(m, has_decodes=True) > 128


def test_budget_fills_the_tbt_headroom() -> None:
    m = _model_with(decode_ms=8.0, overhead_ms=3.0, ms_per_token=0.02)
    policy = BudgetPolicy(tbt_slo_ms=20.0, min_chunk_len=16, max_chunk_len=4096)
    # (20 - 8 - 3) / 0.02 = 450 tokens
    assert policy.tokens(m, has_decodes=True) == pytest.approx(450, abs=1)
    assert policy.headroom_ms(m) == pytest.approx(12.0)


def test_budget_floors_at_min_chunk_and_caps_by_request_and_max() -> None:
    m = _model_with(decode_ms=19.0, overhead_ms=3.0, ms_per_token=0.02)
    policy = BudgetPolicy(tbt_slo_ms=20.0, min_chunk_len=64, max_chunk_len=1024)
    assert policy.tokens(m, has_decodes=True) == 64  # no headroom: still progress
    assert policy.tokens(m, has_decodes=False) == 1024  # no decodes to protect
    assert policy.tokens(m, has_decodes=False, request_cap=200) == 200
    # A router's cap below the floor (a stale "cached" belief) does not make the prefill crawl.
    assert policy.tokens(m, has_decodes=False, request_cap=2) == 64
    assert policy.tokens(m, has_decodes=True, request_cap=32) == 64


def test_budget_without_slo_is_the_max_chunk() -> None:
    policy = BudgetPolicy(tbt_slo_ms=None, min_chunk_len=64, max_chunk_len=2048)
    assert policy.tokens(IterationModel(0.02, 2.0), has_decodes=True) == 2048
    assert policy.headroom_ms(IterationModel(0.02, 2.0)) is None


@pytest.mark.parametrize("lag", [0, 1])
def test_clock_attributes_each_interval_to_the_right_batch(lag: int) -> None:
    clock = IterationClock(lag=lag)
    got = []
    for i, t in enumerate([0.0, 0.010, 0.030, 0.060, 0.100]):
        s = clock.tick(t)
        if s is not None:
            got.append((round(s.iter_ms, 6), s.prefill_tokens))
        clock.launched(prefill_tokens=i, num_decodes=1)
    # Without overlap an interval times the batch just launched; with it, the one launched before.
    expected = {0: [(10.0, 0), (20.0, 1), (30.0, 2), (40.0, 3)], 1: [(20.0, 0), (30.0, 1), (40.0, 2)]}
    assert got == expected[lag]


def test_clock_idle_breaks_the_chain() -> None:
    clock = IterationClock(lag=0)
    clock.tick(0.0)
    clock.launched(0, 1)
    clock.idle()
    assert clock.tick(5.0) is None


def _entry(name: str, prompt_len: int) -> LocalEntry[str]:
    return LocalEntry(req=name, prompt_len=prompt_len, route="local", chunk_len=None)


def test_admission_is_fifo_against_kv_and_blocks_at_the_head() -> None:
    q: LocalQueue[str] = LocalQueue(reserve_decode_tokens=10)
    for name, n in (("a", 100), ("big", 1000), ("c", 5)):
        q.push(_entry(name, n))
    uncached = {"a": 90, "big": 1000, "c": 5}
    admitted = q.admit(
        allocatable_tokens=500, free_req_slots=8, uncached_len_of=uncached.__getitem__, max_reqs=8
    )
    assert [e.req for e in admitted] == ["a"]  # "big" does not fit; "c" may not overtake it
    assert [e.req for e in q] == ["big", "c"]
    assert q.reserved_tokens(lambda r: uncached[r]) == 100
    assert q.queued_tokens() == 1005


def test_admission_respects_request_slots() -> None:
    q: LocalQueue[str] = LocalQueue(reserve_decode_tokens=0)
    for name in "abc":
        q.push(_entry(name, 1))
    admitted = q.admit(10_000, free_req_slots=2, uncached_len_of=lambda r: 1, max_reqs=8)
    assert len(admitted) == 2


def test_unscheduled_entries_return_to_the_front_and_release_their_reservation() -> None:
    q: LocalQueue[str] = LocalQueue(reserve_decode_tokens=0)
    for name in "abc":
        q.push(_entry(name, 10))
    admitted = q.admit(25, 8, lambda r: 10, 8)
    q.push_front(admitted[1:])
    q.prefill_done(admitted[0].req)
    assert [e.req for e in q] == ["b", "c"]
    assert q.reserved_tokens(lambda r: 10) == 0


def test_remove_takes_matching_waiting_requests() -> None:
    q: LocalQueue[str] = LocalQueue(reserve_decode_tokens=0)
    for name in ("r1", "r2", "x"):
        q.push(_entry(name, 1))
    assert q.remove(lambda r: r.startswith("r")) == ["r1", "r2"]
    assert len(q) == 1
