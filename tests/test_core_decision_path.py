"""The one decision path (``core.observe`` -> policy -> ``core.guard``): checked samples, exact
residents, the guard's rules, and host equality (simulator vs emulated worker -> wire -> router)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from test_policies_fixtures import PROFILE, SLO, dw, pw, req, snap

from sglang_ppd.core.guard import NOT_PPD_CAPABLE, STATE_UNKNOWN, TBT_BUDGET, guard
from sglang_ppd.core.lifecycle import Lifecycle
from sglang_ppd.core.observe import checked_sample, observe
from sglang_ppd.core.policy import NoRouteError, load_policy
from sglang_ppd.core.stepmodel import StepModel
from sglang_ppd.core.types import ChunkPlan, Role, Route, RouteKind, Slo
from sglang_ppd.emulator.config import EngineConfig
from sglang_ppd.emulator.engine import Engine
from sglang_ppd.emulator.reports import Ports, server_info_body, telemetry_msg
from sglang_ppd.protocol import telemetry
from sglang_ppd.protocol.server_info import parse_server_info
from sglang_ppd.router.workers import WorkerState
from sglang_ppd.sim.cluster import SimWorker

STEP = StepModel.of(PROFILE)


def _local(d: str, chunk: int = 8192) -> Route:
    return Route(RouteKind.LOCAL, d, chunk_plan=ChunkPlan(chunk, 1), reason="append_cheaper")


# ---- observe: untrusted numbers ------------------------------------------------------------------
def test_checked_sample_drops_and_counts_bad_fields() -> None:
    s, bad = checked_sample(
        num_running=-1, num_waiting=True, queued_prefill_tokens=1 << 50, kv_used_tokens=900,
        kv_capacity_tokens=800, running_context_tokens=10, decode_iter_ms=math.nan,
        mixed_iter_ms=math.inf, tbt_budget_ms=0.0,
    )  # fmt: skip
    assert bad == 7
    assert (s.num_running, s.num_waiting, s.queued_prefill_tokens, s.kv_used_tokens) == (None,) * 4
    assert (s.kv_capacity_tokens, s.running_context_tokens) == (800, 10)
    assert (s.decode_iter_ms, s.mixed_iter_ms, s.tbt_budget_ms) == (None, None, None)
    good, bad = checked_sample(num_running=3, decode_iter_ms=12.5, tbt_budget_ms=30)
    assert bad == 0 and (good.num_running, good.decode_iter_ms, good.tbt_budget_ms) == (3, 12.5, 30.0)


def test_observe_reconciles_residents_with_the_hosts_lifecycle() -> None:
    life = Lifecycle()
    life.on_dispatch("t1", 1000, 200)
    life.on_dispatch("gone", 500, 10)
    life.on_sample()  # the sample counts t1 and "gone" as running
    life.on_finish("t1")  # finished after the sample: no longer a resident
    life.on_dispatch("t2", 3000, 100)  # dispatched since: a resident
    life.on_dispatch("brief", 10, 5)
    life.on_finish("brief")  # started and ended since the sample: counted nowhere
    sample, _ = checked_sample(num_running=2, running_context_tokens=1700)
    snap = observe("d0", Role.DECODE, sample, 20.0, num_inflight=2, since=life.since())
    assert snap.num_running == 2 and snap.running_context_tokens == 1700 - 1000 + 3000
    assert snap.resident_output_len == (10 + 100) // 2
    # Telemetry that already lost a finished request cannot go below zero.
    low, _ = checked_sample(num_running=0, running_context_tokens=0)
    assert observe("d0", Role.DECODE, low, 20.0, since=life.since()).num_running == 1
    # Nothing received: no numbers, no age, but the exact counts.
    none = observe("d0", Role.DECODE, sample, None, num_inflight=2, since=life.since())
    assert none.age_ms is None and none.num_running is None and none.num_inflight == 2


# ---- guard ---------------------------------------------------------------------------------------
def test_guard_sends_local_work_to_unknown_or_incapable_workers_pd() -> None:
    r = req(2000, d0=1800)
    for d, why in (
        (dw("d0", running=0, age_ms=None), STATE_UNKNOWN),
        (dw("d0", running=0, age_ms=5000.0), STATE_UNKNOWN),
        (dw("d0", running=0, healthy=False), STATE_UNKNOWN),
        (dw("d0", running=0, local=False), NOT_PPD_CAPABLE),
    ):
        cs = snap(pw("p0", inflight=3), pw("p1", inflight=1), d, dw("d1", running=0))
        out = guard(_local("d0"), r, cs, SLO, STEP)
        assert out.kind is RouteKind.PD and out.reason == why and out.prefill_worker == "p1"
        assert out.decode_worker == ("d1" if not d.healthy else "d0")
    with pytest.raises(NoRouteError):
        guard(_local("d0"), r, snap(dw("d0", age_ms=None)), SLO, STEP)


def test_guard_keeps_a_mixed_step_within_the_tbt_budget() -> None:
    slo = Slo(ttft_ms=5000.0, tpot_ms=25.0, max_telemetry_age_ms=1000.0)
    short = req(2000, d0=1900)
    long = req(40_000, d0=37_000)
    busy = dw("d0", running=8, ctx_per_req=1000)
    p0 = pw("p0")
    # A short append fits beside 8 short decodes; over a 37k-token context even the floor of
    # 64 tokens costs more than the whole 25 ms budget.
    assert guard(_local("d0"), short, snap(p0, busy), slo, STEP).kind is RouteKind.LOCAL
    out = guard(_local("d0"), long, snap(p0, busy), slo, STEP)
    assert out.kind is RouteKind.PD and out.reason == TBT_BUDGET
    # The worker's own tighter budget binds too.
    tight = dataclasses.replace(busy, tbt_budget_ms=8.0)
    assert guard(_local("d0"), short, snap(p0, tight), slo, STEP).reason == TBT_BUDGET
    # An idle worker takes a prefill that ends in one iteration, but not one that would share
    # floored, over-budget chunks with residents arriving meanwhile.
    idle = dw("d0", running=0)
    assert guard(_local("d0"), long, snap(p0, idle), slo, STEP).kind is RouteKind.LOCAL
    longer = req(50_000, d0=30_000)
    assert guard(_local("d0"), longer, snap(p0, idle), slo, STEP).reason == TBT_BUDGET
    # The router's exact in-flight count makes a worker busy before telemetry shows it.
    soon = dataclasses.replace(idle, num_inflight=8)
    assert guard(_local("d0"), long, snap(p0, soon), slo, STEP).reason == TBT_BUDGET
    # Without a prefill worker the route stands.
    assert guard(_local("d0"), long, snap(busy), slo, STEP).kind is RouteKind.LOCAL


# ---- host equality -------------------------------------------------------------------------------
def _busy_decode_engine() -> Engine:
    engine = Engine(EngineConfig(Role.DECODE, PROFILE, "m", ppd=True, tbt_budget_ms=30.0))
    sched = engine.sched
    for i in range(3):
        sched.add_incoming(f"pd{i}", f"s{i}", 3000 + 500 * i, 200)
        sched.kv_arrived(f"pd{i}")
    sched.add_local("loc", "s9", 6000, 50, 0, 512)
    for _ in range(3):
        it = sched.next_iteration()
        assert it is not None
        sched.complete(it)
    return engine


def test_hosts_feed_the_policy_equal_snapshots_and_routes() -> None:
    """The same decode-worker state, through the simulator and through the emulated worker's
    telemetry on the wire into the router, gives equal snapshots and equal routes."""
    engine = _busy_decode_engine()
    url = "http://127.0.0.1:1"
    ports = Ports(http=1, bootstrap=None, kv_events=2, kv_replay=None, load=3, telemetry=4)
    info = parse_server_info(server_info_body(engine, ports), url)

    sim = SimWorker(1, url, Role.DECODE, engine.sched, phase_s=0.0, period_s=0.1)
    router = WorkerState(url, Role.DECODE, info=info)
    events = (("on_dispatch", "pd0", 3000, 200), ("on_dispatch", "pd1", 3500, 200),
              ("on_dispatch", "pd2", 4000, 200), ("on_dispatch", "loc", 6000, 50))  # fmt: skip
    books = sim.books[0]
    for host in (books.lifecycle, router.lifecycle):
        for name, *args in events:
            getattr(host, name)(*args)
    books.num_inflight = router.num_inflight = 4
    books.num_local_inflight = router.num_local_inflight = 1

    sim.observe(0.0)  # the simulator samples at its publish tick
    wire = telemetry.encode(telemetry_msg(engine, url, 1))
    router.record_telemetry(telemetry.decode(wire[1]))  # the router samples on receipt
    rx_s = router.telemetry_rx_s
    assert rx_s is not None
    for host in (books.lifecycle, router.lifecycle):
        host.on_finish("pd0")  # finished after the sample
        host.on_dispatch("t2", 7000, 100)  # dispatched since
    books.num_inflight = router.num_inflight = 4

    a = sim.snapshot(0.05)
    b = router.snapshot(rx_s + 0.05)
    assert a.age_ms == pytest.approx(b.age_ms)
    assert dataclasses.replace(a, age_ms=0.0) == dataclasses.replace(b, age_ms=0.0)
    published = engine.sched.stats()
    assert a.num_running == published.num_running - 1 + 1  # pd0 gone, t2 in
    assert a.running_context_tokens == published.running_context_tokens - 3000 + 7000
    assert a.tbt_budget_ms == 30.0 and a.supports_local_prefill
    assert a.queued_prefill_tokens is not None and a.queued_prefill_tokens > 0  # counted once

    policy = load_policy("ppd_deflect", {}, PROFILE)
    p = pw("p0", queued=20_000)
    for prompt_len, hit in ((7000, 6000), (7000, 0), (1200, 1000)):
        r = req(prompt_len, **({url: hit} if hit else {}))
        routes = []
        for d in (a, b):
            cs = snap(p, dataclasses.replace(d, age_ms=50.0))
            routes.append(guard(policy.decide(r, cs, SLO), r, cs, SLO, STEP))
        assert routes[0] == routes[1]


def test_the_router_counts_rejected_telemetry_fields_and_keeps_the_rest() -> None:
    w = WorkerState("http://d", Role.DECODE)
    bad = telemetry.WorkerTelemetry(
        worker_url="http://d", role="decode", seq=1, num_running=-5, num_waiting=2,
        queued_prefill_tokens=10, kv_used_tokens=10, kv_capacity_tokens=100,
        decode_iter_ms=math.inf, tbt_budget_ms=-3.0,
    )  # fmt: skip
    w.record_telemetry(telemetry.decode(telemetry.encode(bad)[1]))
    snap_ = w.snapshot(w.telemetry_rx_s or 0.0)
    assert w.num_rejected_fields == 3
    assert (snap_.num_running, snap_.decode_iter_ms, snap_.tbt_budget_ms) == (None, None, None)
    assert (snap_.num_waiting, snap_.queued_prefill_tokens, snap_.kv_used_tokens) == (2, 10, 10)
