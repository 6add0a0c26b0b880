"""Local-route policies: each one's main decision flip on hand-built snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from test_policies_fixtures import SLO, dw, policy, pw, req, snap

from sglang_ppd.core.types import ChunkPlan, RouteKind, Slo

# -- always_local -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "approx", "params", "kind", "where", "reason"),
    [
        ({"d1": 100, "d2": 900}, (), {}, RouteKind.LOCAL, "d2", "resident_prefix"),
        ({"d1": 900, "d2": 900}, (), {}, RouteKind.LOCAL, "d2", "resident_prefix"),  # tie: less loaded
        ({"d1": 900}, ("d1",), {}, RouteKind.PD, "d1", "approx_hit"),
        ({"d1": 900}, ("d1",), {"allow_approx_local": True}, RouteKind.LOCAL, "d1", "resident_prefix"),
        ({"p0": 900}, (), {}, RouteKind.PD, "d0", "no_resident_prefix"),
    ],
)
def test_always_local(
    hits: dict[str, int],
    approx: tuple[str, ...],
    params: dict[str, Any],
    kind: RouteKind,
    where: str,
    reason: str,
) -> None:
    s = snap(pw("p0"), dw("d0", 1), dw("d1", 8), dw("d2", 4))
    r = policy("always_local", **params).decide(req(1000, approx=frozenset(approx), **hits), s, SLO)
    assert (r.kind, r.decode_worker, r.reason) == (kind, where, reason)
    if kind is RouteKind.LOCAL:
        assert r.chunk_plan is not None and r.chunk_plan.chunk_len == 1000 - hits[where]


def test_always_local_skips_decode_without_free_kv() -> None:
    s = snap(pw("p0"), dw("d0", 1, kv_used_tokens=10_000, kv_capacity_tokens=10_100))
    r = policy("always_local").decide(req(3000, d0=2000), s, SLO)
    assert (r.kind, r.reason) == (RouteKind.PD, "kv_full")


# -- threshold ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_len", "params", "p_queue", "running", "kind", "reason"),
    [
        (511, {}, 0, 4, RouteKind.LOCAL, "below_threshold"),  # T - 1
        (513, {}, 0, 4, RouteKind.PD, "above_threshold"),  # T + 1
        (1500, {"max_uncached_len": 2000}, 0, 4, RouteKind.LOCAL, "below_threshold"),
        (1500, {"max_uncached_len": 2000, "max_uncached_ratio": 0.25}, 0, 4, RouteKind.PD, "above_threshold"),
        (300, {"min_prefill_queue_tokens": 4096}, 1000, 4, RouteKind.PD, "prefill_idle"),
        (300, {"min_prefill_queue_tokens": 4096}, 9000, 4, RouteKind.LOCAL, "below_threshold"),
        (300, {"max_decode_running": 16}, 0, 16, RouteKind.PD, "decode_busy"),
        (300, {"max_decode_running": 16}, 0, 15, RouteKind.LOCAL, "below_threshold"),
    ],
)
def test_threshold(
    new_len: int, params: dict[str, Any], p_queue: int, running: int, kind: RouteKind, reason: str
) -> None:
    s = snap(pw("p0", queued=p_queue), pw("p1", queued=p_queue + 10), dw("d0", 2), dw("d1", running))
    r = policy("threshold", **params).decide(req(4000, d1=4000 - new_len), s, SLO)
    assert (r.kind, r.reason) == (kind, reason)
    assert r.decode_worker == "d1"


def test_threshold_tbt_veto_flips_with_tpot_target() -> None:
    s = snap(pw("p0"), dw("d0", 64))
    r = req(4000, d0=3700)
    assert policy("threshold").decide(r, s, SLO).reason == "below_threshold"
    tight = Slo(ttft_ms=2000.0, tpot_ms=25.0)
    assert policy("threshold").decide(r, s, tight).reason == "decode_busy"
    assert policy("threshold", tbt_veto=False).decide(r, s, tight).reason == "below_threshold"


# -- ppd ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppd", "ppd_deflect"])
@pytest.mark.parametrize(
    ("p_queue", "running", "w_tpot", "kind", "reason"),
    [
        (0, 1, 1.0, RouteKind.LOCAL, "append_cheaper"),  # low load: the append is cheap
        (0, 64, 1.0, RouteKind.PD, "pd_cheaper"),  # busy D, idle P: stalling 64 decodes costs more
        (64_000, 64, 1.0, RouteKind.LOCAL, "append_cheaper"),  # queued P: TTFT dominates
        (64_000, 128, 1.0, RouteKind.LOCAL, "append_cheaper"),
        (64_000, 128, 10.0, RouteKind.PD, "pd_cheaper"),  # saturated D and TPOT weighted high
    ],
)
def test_ppd_flips(
    name: str, p_queue: int, running: int, w_tpot: float, kind: RouteKind, reason: str
) -> None:
    s = snap(pw("p0", queued=p_queue), pw("p1", queued=p_queue), dw("d0", running), dw("d1", running))
    slo = Slo(ttft_ms=2000.0, tpot_ms=100.0, w_tpot=w_tpot)
    r = policy(name).decide(req(3000, p0=2000, d0=2800), s, slo)
    assert (r.kind, r.decode_worker, r.reason) == (kind, "d0", reason)


@pytest.mark.parametrize("name", ["ppd", "ppd_deflect"])
def test_ppd_link_congestion_favours_local(name: str) -> None:
    r = req(3000, p0=2000, d0=2800)
    assert policy(name).decide(r, snap(pw("p0"), dw("d0", 32)), SLO).reason == "pd_cheaper"
    congested = snap(pw("p0"), dw("d0", 32), queued_bytes=10 * 10**9)  # 200 ms behind at 50 GB/s
    assert policy(name).decide(r, congested, SLO).reason == "append_cheaper"


def test_ppd_turn1_is_cache_aware_pd() -> None:
    s = snap(pw("p0", queued=64_000), pw("p1", queued=64_000), dw("d0", 1))
    r = policy("ppd").decide(req(3000, p1=2000), s, SLO)
    assert (r.kind, r.prefill_worker, r.reason) == (RouteKind.PD, "p1", "no_resident_prefix")


# -- deflect ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deflect", "ppd_deflect"])
@pytest.mark.parametrize(
    ("p_queue", "kind", "reason"),
    [
        (0, RouteKind.PD, "p_idle"),
        (1000, RouteKind.PD, "p_faster"),
        (32_000, RouteKind.DEFLECT, "p_queue_deflect"),
    ],
)
def test_deflect_flips_when_p_queue_grows(name: str, p_queue: int, kind: RouteKind, reason: str) -> None:
    s = snap(pw("p0", queued=p_queue), pw("p1", queued=p_queue + 5000), dw("d0", 12), dw("d1", 8))
    r = policy(name).decide(req(4000), s, SLO)
    assert (r.kind, r.reason) == (kind, reason)
    if kind is RouteKind.DEFLECT:
        assert r.decode_worker == "d1"  # fewer residents: bigger chunks within the TBT budget
        plan = r.chunk_plan
        assert plan is not None and plan.chunk_len * plan.num_chunks >= 4000
        assert plan.chunk_len * (plan.num_chunks - 1) < 4000


def test_deflect_chunk_keeps_residents_within_beta_tbt() -> None:
    from test_policies_fixtures import PROFILE

    d = dw("d0", 48, ctx_per_req=3000)
    r = policy("deflect").decide(req(6000), snap(pw("p0", queued=100_000), d), SLO)
    assert r.kind is RouteKind.DEFLECT and r.chunk_plan is not None
    chunk = r.chunk_plan.chunk_len
    mixed = PROFILE.iteration_ms([(chunk, 6000 - chunk)], 48, 48 * 3000)
    assert mixed <= 0.9 * SLO.tpot_ms
    assert PROFILE.iteration_ms([(chunk + 1, 6000)], 48, 48 * 3000) > 0.9 * SLO.tpot_ms


@pytest.mark.parametrize(
    ("d_kw", "slo", "params", "reason"),
    [
        ({"num_local_prefills": 2}, SLO, {"max_inflight": 2}, "deflect_cap"),
        ({"num_local_prefills": 2}, SLO, {"max_inflight": 3}, "p_queue_deflect"),
        ({}, Slo(ttft_ms=2000.0, tpot_ms=18.0), {}, "tbt_budget"),
        ({}, Slo(ttft_ms=100.0, tpot_ms=100.0), {}, "ttft_slo"),
        ({"age_ms": 5000.0}, SLO, {}, "stale_telemetry"),
    ],
)
def test_deflect_guards(d_kw: dict[str, Any], slo: Slo, params: dict[str, Any], reason: str) -> None:
    s = snap(pw("p0", queued=200_000), dw("d0", 8, **d_kw))
    r = policy("deflect", **params).decide(req(4000), s, slo)
    assert r.reason == reason
    assert r.kind is (RouteKind.DEFLECT if reason == "p_queue_deflect" else RouteKind.PD)


def test_deflect_alpha_margin() -> None:
    # P queue sized so the deflected prefill is ~10% faster than PD: alpha 0.8 says no, 1.0 says yes.
    s = snap(pw("p0", queued=500), dw("d0", 8))
    ttfts = {alpha: policy("deflect", alpha=alpha).decide(req(4000), s, SLO).reason for alpha in (0.8, 1.0)}
    assert ttfts == {0.8: "p_faster", 1.0: "p_queue_deflect"}


def test_ppd_deflect_blocked_prefix_still_reports_why() -> None:
    # d0 holds the prefix but is stale; nothing else is worth deflecting to on an idle P.
    s = snap(pw("p0"), dw("d0", 4, age_ms=None), dw("d1", 4, local=False))
    r = policy("ppd_deflect").decide(req(3000, d0=2900), s, SLO)
    assert (r.kind, r.reason) == (RouteKind.PD, "stale_telemetry")


def test_ppd_picks_the_cheaper_of_two_resident_workers() -> None:
    # Same prefix on both; d1 has a long backlog of queued local prefill tokens.
    s = snap(pw("p0", queued=64_000), dw("d0", 8), dw("d1", 8, queued_prefill_tokens=30_000))
    r = policy("ppd").decide(req(3000, d0=2800, d1=2800), s, SLO)
    assert (r.kind, r.decode_worker) == (RouteKind.LOCAL, "d0")
    s = snap(pw("p0", queued=64_000), dw("d0", 8, queued_prefill_tokens=30_000), dw("d1", 8))
    assert policy("ppd").decide(req(3000, d0=2800, d1=2800), s, SLO).decode_worker == "d1"


@pytest.mark.parametrize("name", ["always_local", "threshold", "ppd", "ppd_deflect"])
def test_stale_best_hit_falls_to_fresh_shorter_hit(name: str) -> None:
    s = snap(pw("p0", queued=64_000), dw("d0", 4, age_ms=None), dw("d1", 4))
    r = policy(name).decide(req(3000, d0=2990, d1=2700), s, SLO)
    assert (r.kind, r.decode_worker) == (RouteKind.LOCAL, "d1")
    assert r.chunk_plan is not None and r.chunk_plan.chunk_len * r.chunk_plan.num_chunks == 300


@pytest.mark.parametrize("name", ["always_local", "threshold", "ppd", "ppd_deflect"])
def test_full_hit_still_computes_one_token(name: str) -> None:
    s = snap(pw("p0", queued=64_000), dw("d0", 4))
    r = policy(name).decide(req(3000, d0=5000), s, SLO)
    assert r.kind is RouteKind.LOCAL and r.chunk_plan == ChunkPlan(chunk_len=1, num_chunks=1)


@pytest.mark.parametrize(("tpot_ms", "reason"), [(100.0, "append_cheaper"), (25.0, "tbt_budget")])
def test_ppd_tight_tbt_budget_refuses_appends(tpot_ms: float, reason: str) -> None:
    # 32 residents: at a 25 ms TBT not even min_chunk_len tokens fit a step over this context, and
    # the worker would run that many anyway: the append would break TBT, so PD, even behind a
    # 32k-token P queue.
    s = snap(pw("p0", queued=32_000), dw("d0", 32))
    r = policy("ppd").decide(req(3000, p0=2000, d0=2400), s, Slo(ttft_ms=2000.0, tpot_ms=tpot_ms))
    assert r.reason == reason


@pytest.mark.parametrize(
    ("running", "p_queue", "reason"),
    [(8, 8000, "p_queue_deflect"), (128, 8000, "pd_cheaper"), (128, 128_000, "p_queue_deflect")],
)
def test_ppd_deflect_weighs_the_stall_of_residents(running: int, p_queue: int, reason: str) -> None:
    # Kairos alone deflects in all three; the unified policy also charges the stall it puts on the
    # D worker's residents (ppd's score), so a busy D only takes it when P is deeply queued.
    s = snap(pw("p0", queued=p_queue), dw("d0", running, ctx_per_req=1000))
    assert policy("deflect").decide(req(2000), s, SLO).reason == "p_queue_deflect"
    assert policy("ppd_deflect").decide(req(2000), s, SLO).reason == reason


def test_deflect_cap_counts_the_routers_own_local_routes() -> None:
    # Telemetry still says 0 local prefills, but the router has sent two since: a cap of 2 holds.
    s = snap(pw("p0", queued=200_000), dw("d0", 8, num_local_inflight=2))
    assert policy("deflect", max_inflight=2).decide(req(4000), s, SLO).reason == "deflect_cap"
    assert policy("deflect", max_inflight=3).decide(req(4000), s, SLO).reason == "p_queue_deflect"


@pytest.mark.parametrize("name", ["deflect", "ppd_deflect"])
def test_the_routers_own_local_prefills_lengthen_the_deflected_ttft(name: str) -> None:
    """No cap by default: the deflected TTFT counts the local prefills the router sent to that D and
    that have not finished (telemetry, still at 0 queued tokens, lags them), each as long as this
    one. Two of them leave the deflection worth it; forty make P faster."""
    p = pw("p0", queued=60_000)
    few = policy(name).decide(req(4000), snap(p, dw("d0", 8, num_local_inflight=2)), SLO)
    assert (few.kind, few.reason) == (RouteKind.DEFLECT, "p_queue_deflect")
    many = policy(name).decide(req(4000), snap(p, dw("d0", 8, num_local_inflight=40)), SLO)
    assert (many.kind, many.reason) == (RouteKind.PD, "p_faster")


@pytest.mark.parametrize("name", ["deflect", "ppd_deflect"])
def test_idle_prefill_is_never_deflected_even_when_d_would_be_faster(name: str) -> None:
    # A short prompt on an idle cluster: D saves the transfer and a decode step, so TTFT_D < TTFT_P,
    # but nothing is queued on P, so deflecting would only cost the residents TBT.
    s = snap(pw("p0", queued=0), pw("p1", queued=0), dw("d0", 0), dw("d1", 0))
    assert policy(name).decide(req(16), s, SLO).kind is RouteKind.PD
    loaded = snap(pw("p0", queued=32_000), pw("p1", queued=32_000), dw("d0", 0), dw("d1", 0))
    assert policy(name).decide(req(16), loaded, SLO).kind is RouteKind.DEFLECT
    # An idle P behind a congested KV link (2 s of backlog) is a queued PD path too.
    congested = snap(pw("p0"), pw("p1"), dw("d0", 0), dw("d1", 0), queued_bytes=int(100e9))
    assert policy(name).decide(req(16), congested, SLO).kind is RouteKind.DEFLECT


# -- the field's static rules (Dynamo conditional disaggregation, llm-d P/D deciders) ---------------


@pytest.mark.parametrize(
    ("name", "prompt_len", "hit", "p_queue", "kind", "where", "reason"),
    [
        # isl_bounding: effective ISL < 2048 AND effective/raw < 0.7, on the worker with the hit.
        ("dynamo_isl_bounding", 4000, 1953, 0, RouteKind.LOCAL, "d1", "below_threshold"),  # 2047
        ("dynamo_isl_bounding", 4000, 1952, 0, RouteKind.PD, "d0", "above_threshold"),  # 2048
        ("dynamo_isl_bounding", 2000, 600, 0, RouteKind.PD, "d0", "above_threshold"),  # ratio 0.70
        ("dynamo_isl_bounding", 2000, 601, 0, RouteKind.LOCAL, "d1", "below_threshold"),  # 0.6995
        ("dynamo_isl_bounding", 300, 0, 90_000, RouteKind.PD, "d0", "above_threshold"),  # no load rule
        # prefill_load: the least-queued P above 16384 tokens keeps even a Turn 1 on D.
        ("dynamo_prefill_load", 8000, 0, 16_385, RouteKind.DEFLECT, "d0", "prefill_busy"),
        ("dynamo_prefill_load", 8000, 0, 16_384, RouteKind.PD, "d0", "prefill_idle"),
        ("dynamo_prefill_load", 8000, 7900, 0, RouteKind.PD, "d1", "prefill_idle"),  # no ISL rule
        ("dynamo_prefill_load", 8000, 2000, 20_000, RouteKind.LOCAL, "d1", "prefill_busy"),
        ("dynamo_isl_or_load", 4000, 3000, 0, RouteKind.LOCAL, "d1", "below_threshold"),
        ("dynamo_isl_or_load", 8000, 0, 20_000, RouteKind.DEFLECT, "d0", "prefill_busy"),
        ("dynamo_isl_or_load", 8000, 0, 0, RouteKind.PD, "d0", "prefill_idle"),
        # (a PD route takes pd_cache_aware's decode choice: the hit's worker above a 0.5 hit ratio)
        # llm-d: remote prefill iff uncached >= 512 / iff prompt >= 512; else the decode pod prefills.
        ("llmd_non_cached_tokens", 4000, 3489, 0, RouteKind.LOCAL, "d1", "below_threshold"),  # 511
        ("llmd_non_cached_tokens", 4000, 3488, 0, RouteKind.PD, "d1", "above_threshold"),  # 512
        ("llmd_non_cached_tokens", 300, 0, 0, RouteKind.DEFLECT, "d0", "below_threshold"),
        ("llmd_prompt_tokens", 511, 0, 0, RouteKind.DEFLECT, "d0", "below_threshold"),
        ("llmd_prompt_tokens", 512, 500, 0, RouteKind.PD, "d1", "above_threshold"),
    ],
)
def test_field_rules(
    name: str, prompt_len: int, hit: int, p_queue: int, kind: RouteKind, where: str, reason: str
) -> None:
    s = snap(pw("p0", queued=p_queue), pw("p1", queued=p_queue + 10), dw("d0", 2), dw("d1", 6))
    hits = {"d1": hit} if hit else {}
    r = policy(name).decide(req(prompt_len, **hits), s, SLO)
    assert (r.kind, r.decode_worker, r.reason) == (kind, where, reason)
    if kind is not RouteKind.PD:
        assert r.chunk_plan is not None
        assert r.chunk_plan.chunk_len * r.chunk_plan.num_chunks >= prompt_len - hit


def test_field_rules_have_no_tbt_model() -> None:
    """A 300-token append beside 64 long decodes breaks a 25 ms TPOT target: ``threshold``'s veto
    sends it PD, the field's rules keep it local (that blindness is what the grid measures)."""
    s = snap(pw("p0"), dw("d0", 64))
    r, tight = req(4000, d0=3700), Slo(ttft_ms=2000.0, tpot_ms=25.0)
    assert policy("threshold").decide(r, s, tight).reason == "decode_busy"
    for name in ("dynamo_isl_bounding", "dynamo_isl_or_load", "llmd_non_cached_tokens"):
        assert policy(name).decide(r, s, tight).kind is RouteKind.LOCAL, name


def test_dynamo_decode_busy_guard() -> None:
    """Off by default; set, it sends PD when D's KV use with this request passes the fraction, and
    when D reports no capacity (Dynamo's fallback)."""
    cap = 100_000
    s = snap(pw("p0"), dw("d0", 2, kv_used_tokens=60_000, kv_capacity_tokens=cap))
    r = req(4000, max_new=1000, d0=3000)  # needs 5,000 tokens of KV
    assert policy("dynamo_isl_bounding").decide(r, s, SLO).kind is RouteKind.LOCAL
    assert policy("dynamo_isl_bounding", decode_busy_threshold=0.65).decide(r, s, SLO).kind is RouteKind.LOCAL
    busy = policy("dynamo_isl_bounding", decode_busy_threshold=0.64).decide(r, s, SLO)
    assert (busy.kind, busy.reason) == (RouteKind.PD, "decode_busy")
    blind = snap(pw("p0"), dw("d0", 2, kv_used_tokens=None, kv_capacity_tokens=None))
    assert policy("dynamo_isl_bounding", decode_busy_threshold=0.9).decide(r, blind, SLO).kind is RouteKind.PD
