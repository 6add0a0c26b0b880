"""The cost-based policies' PD path: which P gets the prefill (``cost_pair``), and the P compute a
local append only defers (``count_deferred_prefill``)."""

from __future__ import annotations

import pytest
from test_policies_fixtures import SLO, dw, policy, pw, req, snap

from sglang_ppd.core.types import RouteKind, Slo

# -- cost_pair ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppd", "deflect", "ppd_deflect"])
def test_a_deep_queue_on_the_p_that_holds_the_history_sends_the_prefill_to_the_idle_p(name: str) -> None:
    """p0 holds 38k of the 40k-token history but has 2M tokens queued (minutes of work); p1 is
    idle and would recompute all 40k (seconds). In-flight counts (8 vs 0) are balanced by
    sglang_router's rule, so the cache-aware choice waits behind the queue."""
    r = req(40_000, p0=38_000)
    s = snap(pw("p0", queued=2_000_000, inflight=8), pw("p1"), dw("d0", running=4))
    route = policy(name).decide(r, s, SLO)
    assert (route.kind, route.prefill_worker) == (RouteKind.PD, "p1")
    cache_aware = policy(name, prefill_choice="cache_aware").decide(r, s, SLO)
    assert (cache_aware.kind, cache_aware.prefill_worker) == (RouteKind.PD, "p0")


def test_a_short_queue_on_the_p_that_holds_the_history_keeps_the_prefill_there() -> None:
    r = req(40_000, p0=38_000)
    s = snap(pw("p0", queued=4_000, inflight=1), pw("p1"), dw("d0", running=4))
    assert policy("ppd").decide(r, s, SLO).prefill_worker == "p0"


def test_stale_prefill_telemetry_falls_back_on_in_flight_counts_for_every_p() -> None:
    """p0's queue is unknown (stale): both Ps are costed on in-flight x prompt, so the idle p1 wins
    against the hit on p0 only when p0's in-flight backlog outweighs recomputing the prompt."""
    r = req(40_000, p0=38_000)
    stale = pw("p0", queued=0, inflight=20, age_ms=None)
    assert policy("ppd").decide(r, snap(stale, pw("p1"), dw("d0")), SLO).prefill_worker == "p1"
    light = pw("p0", queued=0, inflight=0, age_ms=None)
    assert policy("ppd").decide(r, snap(light, pw("p1"), dw("d0")), SLO).prefill_worker == "p0"


# -- count_deferred_prefill -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppd", "ppd_deflect"])
def test_an_append_that_only_defers_ps_work_goes_pd(name: str) -> None:
    """A 24k-token history on a D with two residents: the append fits the 100 ms TBT budget now,
    but not at twice the history, so the session is headed for PD and P would recompute this turn
    then. Charged with that, the idle PD path wins; uncharged, the append looks cheaper."""
    r = req(24_000, d0=23_500, p0=22_500)
    s = snap(pw("p0"), dw("d0", running=2, ctx_per_req=24_000))
    charged = policy(name).decide(r, s, SLO)
    assert (charged.kind, charged.reason) == (RouteKind.PD, "pd_cheaper")
    uncharged = policy(name, count_deferred_prefill=False).decide(r, s, SLO)
    assert (uncharged.kind, uncharged.reason) == (RouteKind.LOCAL, "append_cheaper")


@pytest.mark.parametrize(("prompt_len", "running"), [(8_000, 8), (24_000, 0), (60_000, 0)])
def test_short_histories_and_idle_decode_workers_are_never_charged(prompt_len: int, running: int) -> None:
    """A chat-sized history on a busy D, or any history on an idle D (an immediate next turn):
    twice the history still fits, so nothing is deferred and the append stays local."""
    r = req(prompt_len, d0=prompt_len - 500, p0=prompt_len - 1500)
    s = snap(pw("p0"), dw("d0", running=running, ctx_per_req=prompt_len))
    route = policy("ppd").decide(r, s, SLO)
    assert (route.kind, route.reason) == (RouteKind.LOCAL, "append_cheaper")


# -- the PD route's decode worker -----------------------------------------------------------------

TIGHT = Slo(ttft_ms=5000.0, tpot_ms=25.0, max_telemetry_age_ms=1000.0)


@pytest.mark.parametrize("name", ["ppd", "deflect", "ppd_deflect"])
def test_the_pd_route_avoids_a_decode_worker_this_request_would_push_past_its_tbt_budget(name: str) -> None:
    """d0 holds the history but runs 320k context tokens: with 30k more its step passes 25 ms
    (6.9 ms + 0.059 ms per 1k tokens). d1 runs 50k. At a 25 ms TPOT the request decodes on d1;
    at 100 ms both fit and the hit decides."""
    r = req(30_000, p0=29_000, d0=29_000)
    s = snap(pw("p0"), dw("d0", running=10, ctx_per_req=32_000), dw("d1", running=2, ctx_per_req=25_000))
    route = policy(name).decide(r, s, TIGHT)
    assert (route.kind, route.decode_worker) == (RouteKind.PD, "d1")
    assert policy(name).decide(r, s, SLO).decode_worker == "d0"
    assert policy(name, prefill_choice="cache_aware").decide(r, s, TIGHT).decode_worker == "d0"


def test_when_no_decode_worker_has_tbt_room_the_shortest_step_wins() -> None:
    r = req(30_000, p0=29_000, d0=29_000)
    s = snap(pw("p0"), dw("d0", running=10, ctx_per_req=34_000), dw("d1", running=10, ctx_per_req=32_000))
    assert policy("ppd").decide(r, s, TIGHT).decode_worker == "d1"
