"""TPOT as a constraint inside the policies (the same rule ``core.guard`` enforces), and the stall
charged to the residents' own outputs."""

from __future__ import annotations

import dataclasses

from test_policies_fixtures import dw, policy, pw, req, snap

from sglang_ppd.core.types import RouteKind, Slo

TIGHT = Slo(ttft_ms=5000.0, tpot_ms=25.0, max_telemetry_age_ms=1000.0)


def test_an_append_over_a_long_context_never_goes_to_a_busy_decode_worker() -> None:
    """40k tokens of history: a 64-token chunk over them alone takes longer than 25 ms."""
    r = req(40_000, d0=38_000)
    cs = snap(pw("p0", queued=200_000), dw("d0", running=4, ctx_per_req=1000))
    for name in ("ppd", "ppd_deflect"):
        route = policy(name).decide(r, cs, TIGHT)
        assert route.kind is RouteKind.PD and route.reason == "tbt_budget", (name, route)
    # The same append at the loose 100 ms target fits.
    loose = dataclasses.replace(TIGHT, tpot_ms=100.0)
    assert policy("ppd_deflect").decide(req(6000, d0=5800), cs, loose).kind is RouteKind.LOCAL


def test_the_workers_own_tbt_budget_binds_when_tighter() -> None:
    r = req(3000, d0=2900)
    busy = dw("d0", running=8, ctx_per_req=1000)
    loose = dataclasses.replace(TIGHT, tpot_ms=100.0)
    assert policy("ppd").decide(r, snap(pw("p0", queued=50_000), busy), loose).kind is RouteKind.LOCAL
    own = dataclasses.replace(busy, tbt_budget_ms=9.0)
    assert policy("ppd").decide(r, snap(pw("p0", queued=50_000), own), loose).reason == "tbt_budget"


def test_no_multi_chunk_deflection_that_arriving_residents_would_share() -> None:
    """A 20k-token prefill deflected to an idle D runs in several chunks; a resident arriving
    meanwhile (PD transfers land on any D) would share 64-token chunks over 8k-20k cached tokens,
    each past the 40 ms TBT: PD. A 2k-token one ends in one iteration and may deflect."""
    slo = Slo(ttft_ms=60_000.0, tpot_ms=40.0, max_telemetry_age_ms=1000.0)
    cs = snap(pw("p0", queued=400_000), dw("d0", running=0))
    route = policy("deflect").decide(req(20_000), cs, slo)
    assert route.kind is RouteKind.PD and route.reason == "tbt_budget", route
    short = policy("deflect").decide(req(2000), cs, slo)
    assert short.kind is RouteKind.DEFLECT, short


def test_the_stall_is_spread_over_the_residents_outputs() -> None:
    """The same append, the same residents: short-output residents feel a stall more than long
    ones, so the append is refused where the residents' outputs are short."""
    r = req(3000, max_new=2000, d0=1500)
    slo = Slo(ttft_ms=2000.0, tpot_ms=100.0, max_telemetry_age_ms=1000.0)
    base = dw("d0", running=32, ctx_per_req=3000)
    p = pw("p0", queued=0)
    kinds = {}
    for out_len in (4, 2000):
        d = dataclasses.replace(base, resident_output_len=out_len)
        kinds[out_len] = policy("ppd").decide(r, snap(p, d), slo).kind
    assert kinds == {4: RouteKind.PD, 2000: RouteKind.LOCAL}
