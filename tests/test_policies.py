"""PD-path policies (pd, pd_cache_aware), the shared estimator, availability fallbacks, plugin loading."""

from __future__ import annotations

from typing import Any

import pytest
from sglang_ppd_policies.estimate import Estimator
from test_policies_fixtures import PROFILE, SLO, dw, policy, pw, req, snap

from sglang_ppd.core.config import ConfigError
from sglang_ppd.core.policy import NoRouteError, available_policies
from sglang_ppd.core.types import Route, RouteKind

ALL = [
    "pd", "pd_cache_aware", "always_local", "threshold", "ppd", "deflect", "ppd_deflect",
    "dynamo_isl_bounding", "dynamo_prefill_load", "dynamo_isl_or_load",
    "llmd_non_cached_tokens", "llmd_prompt_tokens",
]  # fmt: skip


# -- pd ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "want_p", "want_d"),
    [
        ((pw("p0", queued=5000), pw("p1", queued=100), dw("d0", running=9), dw("d1", running=3)), "p1", "d1"),
        ((pw("p0", queued=0), pw("p1", queued=0), dw("d0", running=2), dw("d1", running=2)), "p0", "d0"),
        # equal telemetry: the router's in-flight count breaks the tie
        (
            (pw("p0", inflight=3), pw("p1", inflight=1), dw("d0", 2, inflight=5), dw("d1", 2, inflight=2)),
            "p1",
            "d1",
        ),
        # one stale P: every P compared on in-flight only, so the queue numbers are ignored
        (
            (pw("p0", queued=0, inflight=4), pw("p1", queued=9000, inflight=1, age_ms=None)) + (dw("d0"),),
            "p1",
            "d0",
        ),
    ],
)
def test_pd_least_loaded(workers: tuple, want_p: str, want_d: str) -> None:
    r = policy("pd").decide(req(1000, p0=900, d0=900), snap(*workers), SLO)
    assert (r.kind, r.prefill_worker, r.decode_worker, r.reason) == (
        RouteKind.PD,
        want_p,
        want_d,
        "least_loaded",
    )


def test_pd_needs_no_decode_cache_and_others_do() -> None:
    from sglang_ppd.core.policy import available_policies as avail

    flags = {name: ep.load().needs_decode_cache for name, ep in avail().items() if name in ALL}
    assert flags == {name: name != "pd" for name in ALL}


# -- pd_cache_aware --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "inflight", "want_p", "want_d", "reason"),
    [
        ({"p1": 600, "d1": 900}, (0, 0), "p1", "d1", "cache_hit"),
        ({"p1": 400, "d1": 400}, (0, 0), "p0", "d0", "low_hit"),  # 0.4 < 0.5: least loaded
        ({"p1": 501}, (0, 0), "p1", "d0", "cache_hit"),
        ({"p1": 900}, (0, 40), "p0", "d0", "load_imbalance"),  # 40 - 0 > 32 and 40 > 0
        ({"p1": 900}, (10, 40), "p1", "d0", "cache_hit"),  # spread 30 <= 32: hit decides
    ],
)
def test_pd_cache_aware(hits: dict, inflight: tuple, want_p: str, want_d: str, reason: str) -> None:
    s = snap(pw("p0", inflight=inflight[0]), pw("p1", inflight=inflight[1]), dw("d0", 2), dw("d1", 3))
    r = policy("pd_cache_aware").decide(req(1000, **hits), s, SLO)
    assert (r.kind, r.prefill_worker, r.decode_worker, r.reason) == (RouteKind.PD, want_p, want_d, reason)


def test_pd_cache_aware_threshold_param_flips() -> None:
    s = snap(pw("p0"), pw("p1"), dw("d0"))
    r = req(1000, p1=300)
    assert policy("pd_cache_aware").decide(r, s, SLO).prefill_worker == "p0"
    assert policy("pd_cache_aware", cache_threshold=0.25).decide(r, s, SLO).prefill_worker == "p1"


# -- availability -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_no_decode_worker_raises(name: str) -> None:
    with pytest.raises(NoRouteError, match="no healthy decode"):
        policy(name).decide(req(100), snap(pw("p0"), dw("d0", healthy=False)), SLO)


@pytest.mark.parametrize("name", ALL)
def test_no_prefill_falls_back_to_fresh_capable_decode(name: str) -> None:
    s = snap(pw("p0", healthy=False), dw("d0", age_ms=None), dw("d1", local=False), dw("d2"), dw("d3"))
    r = policy(name).decide(req(3000, d3=2000), s, SLO)
    # A rule that keeps this 1,000-token append local names its own reason; the rest find no P.
    keeps = {"always_local": "resident_prefix", "dynamo_isl_bounding": "below_threshold"}
    want = keeps.get(name, "below_threshold" if name == "dynamo_isl_or_load" else "no_prefill")
    assert (r.kind, r.decode_worker, r.reason) == (RouteKind.LOCAL, "d3", want)
    r = policy(name).decide(req(3000), s, SLO)
    assert (r.kind, r.decode_worker, r.reason) == (RouteKind.DEFLECT, "d2", "no_prefill")
    assert r.chunk_plan is not None and r.chunk_plan.chunk_len * r.chunk_plan.num_chunks >= 3000


@pytest.mark.parametrize("name", ALL)
def test_no_prefill_and_no_capable_decode_raises(name: str) -> None:
    s = snap(pw("p0", healthy=False), dw("d0", age_ms=5000.0), dw("d1", local=False))
    with pytest.raises(NoRouteError, match="no healthy prefill"):
        policy(name).decide(req(100, d0=50), s, SLO)


@pytest.mark.parametrize("name", ALL)
def test_stale_or_unsupported_decode_never_gets_local(name: str) -> None:
    # d0 holds almost the whole prompt, but its telemetry is stale; d1's is missing; d2 cannot
    # run local prefills. P is deeply queued so every local-leaning policy would want local.
    s = snap(
        pw("p0", queued=200_000),
        dw("d0", age_ms=SLO.max_telemetry_age_ms + 1),
        dw("d1", age_ms=None),
        dw("d2", local=False),
    )
    cases: list[dict[str, Any]] = [{"d0": 7990}, {"d1": 7990}, {"d2": 7990}, {}]
    for hits in cases:
        r = policy(name).decide(req(8000, **hits), s, SLO)
        assert r.kind is RouteKind.PD, (hits, r)


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name: str) -> None:
    s = snap(pw("p0", queued=30000), pw("p1", queued=30000), dw("d0", 8), dw("d1", 8), dw("d2", 8))
    r = req(4000, p0=1000, p1=1000, d1=3000, d2=3000)
    pol = policy(name)
    assert len({pol.decide(r, s, SLO) for _ in range(5)} | {policy(name).decide(r, s, SLO)}) == 1


# -- plugin loading ---------------------------------------------------------------------------------


def test_all_builtins_registered_and_load() -> None:
    assert set(ALL) <= set(available_policies())
    for name in ALL:
        assert policy(name).decide(req(100), snap(pw("p0"), dw("d0")), SLO).decode_worker == "d0"


def test_unknown_policy_lists_available() -> None:
    with pytest.raises(ConfigError) as exc:
        policy("nope")
    assert all(name in str(exc.value) for name in ALL)


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("pd_cache_aware", {"cache_threshold": 1.5}, "cache_threshold"),
        ("pd_cache_aware", {"cache_treshold": 0.5}, "unknown key"),
        ("pd", {"x": 1}, "unknown key"),
        ("threshold", {"max_uncached_len": -1}, "max_uncached_len"),
        ("deflect", {"beta": 0}, "beta"),
        ("deflect", {"beta": 1.5}, "beta"),
        ("ppd_deflect", {"alpha": "fast"}, "alpha"),
        ("ppd_deflect", {"max_inflight": 0}, "max_inflight"),
    ],
)
def test_bad_params_rejected(name: str, params: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        policy(name, **params)


# -- estimator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "cached", "chunk"), [(1, 0, 8192), (8192, 0, 8192), (20000, 3000, 8192), (300, 5000, 64)]
)
def test_chunked_ms_matches_cost_model(new: int, cached: int, chunk: int) -> None:
    est = Estimator(PROFILE)
    assert est.chunked_ms(new, cached, chunk, 0.0) == pytest.approx(PROFILE.prefill_ms(new, cached, chunk))


@pytest.mark.parametrize(("running", "ctx", "budget"), [(1, 500, 90.0), (32, 2000, 90.0), (128, 4000, 60.0)])
def test_max_chunk_len_is_the_largest_within_budget(running: int, ctx: int, budget: float) -> None:
    est = Estimator(PROFILE)
    k = 6000
    extra = PROFILE.decode_ms(running, running * ctx)
    x = est.max_chunk_len(k, extra, budget)
    assert 0 < x <= PROFILE.chunked_prefill_size
    assert PROFILE.iteration_ms([(x, k)], running, running * ctx) <= budget
    if x < PROFILE.chunked_prefill_size:
        assert PROFILE.iteration_ms([(x + 1, k)], running, running * ctx) > budget


def test_max_chunk_len_zero_when_decodes_alone_exceed_budget() -> None:
    est = Estimator(PROFILE)
    assert est.max_chunk_len(1000, 200.0, 90.0) == 0


def test_transfer_includes_link_queue() -> None:
    est = Estimator(PROFILE)
    s = snap(pw("p0"), dw("d0"), queued_bytes=5 * 10**9)
    idle = snap(pw("p0"), dw("d0"))
    assert est.transfer_ms(1000, s.link) == pytest.approx(est.transfer_ms(1000, idle.link) + 100.0)


def test_interned_pd_routes_are_equal_and_bounded() -> None:
    from sglang_ppd_policies.candidates import PdRoutes

    routes = PdRoutes()
    a = routes.get(pw("p0"), dw("d0"), "cache_hit")
    assert a == Route(kind=RouteKind.PD, decode_worker="d0", prefill_worker="p0", reason="cache_hit")
    assert routes.get(pw("p0"), dw("d0"), "cache_hit") is a
    for i in range(PdRoutes.MAX_ROUTES + 10):
        routes.get(pw(f"p{i}"), dw("d0"), "low_hit")
    assert len(routes._routes) <= PdRoutes.MAX_ROUTES


def test_p_queue_uses_inflight_fallback_when_stale() -> None:
    est = Estimator(PROFILE)
    fresh = pw("p0", queued=3000, inflight=2)
    assert est.p_queue_ms(fresh, True, 1500) == est.p_queue_ms(pw("p1", queued=3000), True, 1500) > 0
    # stale: the queue is unknown, two in flight as long as this prompt (3000 tokens) stand in for it
    assert est.p_queue_ms(fresh, False, 1500) == est.p_queue_ms(pw("p1", queued=2 * 1500), True, 1500)
    assert est.p_queue_ms(pw("p2"), True, 1500) == 0.0


def test_cache_aware_decode_needs_room_for_the_request() -> None:
    # d1 holds the history but lacks free KV for prompt + output: the transfer would wait there.
    full = dw("d1", 2, kv_used_tokens=PROFILE.kv_capacity_tokens - 5000)
    s = snap(pw("p0"), dw("d0", 3), full)
    assert policy("pd_cache_aware").decide(req(4000, max_new=500, d1=3900), s, SLO).decode_worker == "d1"
    assert policy("pd_cache_aware").decide(req(4000, max_new=1500, d1=3900), s, SLO).decode_worker == "d0"
    # stale KV numbers count as room; no D with room: all are candidates again
    stale_full = dw("d1", 2, kv_used_tokens=PROFILE.kv_capacity_tokens, age_ms=None)
    assert (
        policy("pd_cache_aware")
        .decide(req(4000, d1=3900), snap(pw("p0"), dw("d0"), stale_full), SLO)
        .decode_worker
        == "d1"
    )
    both_full = (dw(w, 2, kv_used_tokens=PROFILE.kv_capacity_tokens) for w in ("d0", "d1"))
    assert (
        policy("pd_cache_aware").decide(req(4000, d1=3900), snap(pw("p0"), *both_full), SLO).decode_worker
        == "d1"
    )


def test_kv_room_clips_max_new_tokens_like_sglang() -> None:
    # 10,000 tokens free: a 4,000-token prompt with a 100k max_new_tokens cap still fits (SGLang
    # reserves at most 4,096 output tokens), one with a 7,000-token prompt does not.
    d1 = dw("d1", 2, kv_used_tokens=PROFILE.kv_capacity_tokens - 10_000)
    s = snap(pw("p0"), dw("d0", 3), d1)
    assert policy("pd_cache_aware").decide(req(4000, max_new=100_000, d1=3900), s, SLO).decode_worker == "d1"
    assert policy("pd_cache_aware").decide(req(7000, max_new=100_000, d1=6900), s, SLO).decode_worker == "d0"
