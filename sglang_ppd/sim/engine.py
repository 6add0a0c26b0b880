"""The discrete-event loop: arrivals, routing decisions, worker iterations and KV transfers.

Events sit in a heap as ``(time_s, seq, kind, a, b)``; ``seq`` is a global counter, so ties resolve
in the order events were created and a run is a pure function of (workload, policy, config, seed).
Every handler returns its follow-up events instead of pushing them. There is no wall clock here.

A PD request first waits in its D worker's prealloc queue; once D has reserved its KV it joins its
P worker's queue (SGLang's bootstrap: P only prefills what D can receive, so P and D can never
hold each other's memory in a cycle). When the prefill is done its KV goes on the link, and only
the tokens D lacks are sent. Its first token comes from D's first decode step after the transfer.
A local or deflected request prefills on D in chunks mixed into decode steps; the iteration that
completes its prompt emits its first token.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sglang_ppd.core.guard import guard
from sglang_ppd.core.policy import Policy
from sglang_ppd.core.stepmodel import StepModel
from sglang_ppd.core.types import RequestFeatures, Role, Route, RouteKind, Slo
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.sim.cluster import SimCluster, SimWorker
from sglang_ppd.sim.replicas import (
    DISPATCH,
    DISPATCH_LOCAL,
    DISPATCH_PREFILL,
    FINISH,
    FIRST_TOKEN_LOCAL,
    RELEASE_PREFILL,
    RouterTier,
)
from sglang_ppd.workload.spec import TurnSpec

ARRIVE, ITER, XFER = 0, 1, 2
Event = tuple[float, int, object]
"""(time_s, kind, payload) as returned by handlers; the loop adds the tie-breaking sequence."""


@dataclass(slots=True)
class _Flight:
    spec: TurnSpec
    arrival_s: float
    route: Route
    decode: SimWorker
    prefill: SimWorker | None
    router: int
    prefill_done: bool = False
    send_tokens: int | None = None
    first_token_s: float | None = None
    cached_len: int = 0
    kv_bytes: int = 0


@dataclass(slots=True)
class SimOutcome:
    records: list[RequestRecord]
    end_s: float
    num_events: int
    busy_ms: dict[str, float]
    link_bytes: int
    decisions: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(
        self,
        workload: Iterable[TurnSpec],
        policy: Policy,
        slo: Slo,
        cluster: SimCluster,
        *,
        check_invariants: bool = False,
    ) -> None:
        self.policy, self.slo, self.cluster = policy, slo, cluster
        self.kv_bytes_per_token = cluster.profile.kv_bytes_per_token
        self.step = StepModel.of(cluster.profile)
        self.min_chunk_len = cluster.config.min_chunk_len
        self.check_invariants = check_invariants
        self.by_id = {w.worker_id: w for w in cluster.workers}
        cfg = cluster.config
        self.tier = RouterTier(cfg.num_routers, cfg.lb_balance, cfg.peer_sync_ms)
        self.flights: dict[str, _Flight] = {}
        self.records: list[RequestRecord] = []
        self.initial: list[TurnSpec] = []
        self.follow: dict[str, TurnSpec] = {}
        prev: dict[str, TurnSpec] = {}
        for spec in sorted(workload, key=lambda s: (s.session_id, s.turn)):
            if spec.arrival_s is None:
                before = prev.get(spec.session_id)
                if before is None:
                    raise ValueError(f"closed-loop turn {spec.request_id} has no earlier turn in its session")
                self.follow[before.request_id] = spec
            else:
                self.initial.append(spec)
            prev[spec.session_id] = spec

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, progress: Callable[[int], None] | None = None) -> SimOutcome:
        """Run to the end. ``progress`` gets the number of ended requests every few thousand events."""
        heap: list[tuple[float, int, int, object]] = []
        seq = 0
        for spec in sorted(self.initial, key=lambda s: (s.arrival_s, s.session_id, s.turn)):
            heap.append((spec.arrival_s or 0.0, seq, ARRIVE, spec))
            seq += 1
        heapq.heapify(heap)
        now, num_events = 0.0, 0
        handlers = {ARRIVE: self._arrive, ITER: self._iteration_done, XFER: self._transfer_done}
        while heap:
            now, _, kind, payload = heapq.heappop(heap)
            num_events += 1
            if progress is not None and not num_events & 0xFFF:
                progress(len(self.records))
            for ev in handlers[kind](now, payload):
                heapq.heappush(heap, (ev[0], seq, ev[1], ev[2]))
                seq += 1
            if self.check_invariants:
                for w in self.cluster.workers:
                    w.sched.audit()
        if self.flights:
            stuck = next(iter(self.flights))
            raise AssertionError(f"{len(self.flights)} requests never finished, e.g. {stuck}")
        return SimOutcome(
            records=sorted(self.records, key=lambda r: (r.arrival_s, r.request_id)),
            end_s=now,
            num_events=num_events,
            busy_ms={w.worker_id: w.sched.busy_ms for w in self.cluster.workers},
            link_bytes=sum(link.bytes_total for link in self.cluster.links.values()),
        )

    def _kick(self, w: SimWorker, now: float) -> list[Event]:
        done_s = w.kick(now)
        return [] if done_s is None else [(done_s, ITER, (w.index, w.version))]

    # ---- arrivals and routing ------------------------------------------------------------------
    def _features(self, spec: TurnSpec) -> RequestFeatures:
        cached = {}
        for w in self.cluster.workers:
            hit = w.sched.hit_len(spec.session_id, spec.input_len, spec.shared_prefix_len)
            if hit:
                cached[w.worker_id] = hit
        return RequestFeatures(
            spec.request_id,
            spec.input_len,
            self.cluster.config.max_new_tokens or spec.output_len,
            cached,
            session_id=spec.session_id,
            turn=spec.turn,
        )

    def _arrive(self, now: float, spec: object) -> list[Event]:
        assert isinstance(spec, TurnSpec)
        r = self.tier.pick(spec.session_id)
        try:
            feats, snap = self._features(spec), self.cluster.snapshot(now, r)
            route = self.policy.decide(feats, snap, self.slo)
            route = guard(route, feats, snap, self.slo, self.step, self.min_chunk_len)
            decode, prefill = self._check_route(route)
        except Exception as exc:  # a policy may find no route: the request fails, the run goes on
            self.tier.close(r)
            return self._fail(now, spec, None, f"routing failed: {type(exc).__name__}: {exc}")
        for w in (decode, prefill):
            if w is not None:
                w.observe(now)
        f = _Flight(spec, now, route, decode, prefill, r)
        args = (spec.request_id, spec.session_id, spec.input_len)
        try:
            if prefill is None:
                chunk = route.chunk_plan.chunk_len if route.chunk_plan else None
                decode.sched.add_local(*args, spec.output_len, spec.shared_prefix_len, chunk)
            else:
                allocated = decode.sched.add_incoming(*args, spec.output_len, spec.shared_prefix_len)
        except ValueError as exc:  # longer than a worker's whole KV pool
            self.tier.close(r)
            return self._fail(now, spec, route, str(exc))
        self.flights[spec.request_id] = f
        output_len = self.cluster.config.max_new_tokens or spec.output_len
        op = DISPATCH if prefill else DISPATCH_LOCAL
        self.tier.record(now, decode.books, r, op, spec.request_id, spec.input_len, output_len)
        if prefill is None:
            return self._kick(decode, now)
        self.tier.record(now, prefill.books, r, DISPATCH_PREFILL)
        return self._allocated(now, allocated)

    def _allocated(self, now: float, allocated: Iterable[tuple[str, int]]) -> list[Event]:
        """D has reserved these requests' KV: their P workers may prefill them (never longer than
        D's pool, so they fit P's)."""
        events: list[Event] = []
        for rid, tokens in allocated:
            f = self.flights[rid]
            f.send_tokens = tokens
            assert f.prefill is not None
            spec = f.spec
            f.prefill.observe(now)
            f.prefill.sched.add_prefill(rid, spec.session_id, spec.input_len, spec.shared_prefix_len)
            events += self._kick(f.prefill, now)
        return events

    def _check_route(self, route: Route) -> tuple[SimWorker, SimWorker | None]:
        d = self.by_id.get(route.decode_worker)
        if d is None or d.role is not Role.DECODE:
            raise ValueError(f"route names {route.decode_worker!r}, not a decode worker")
        if route.kind is not RouteKind.PD:
            return d, None
        p = self.by_id.get(route.prefill_worker or "")
        if p is None or p.role is not Role.PREFILL:
            raise ValueError(f"route names {route.prefill_worker!r}, not a prefill worker")
        return d, p

    # ---- workers -------------------------------------------------------------------------------
    def _iteration_done(self, now: float, payload: object) -> list[Event]:
        assert isinstance(payload, tuple)
        index: int = payload[0]
        version: int = payload[1]
        w = self.cluster.workers[index]
        if version != w.version or w.iteration is None:
            return []  # superseded by a truncated leap
        it = w.iteration
        w.iteration = None
        w.observe(now)
        out = w.sched.complete(it)
        events: list[Event] = []
        first_s = w.started_s + it.first_step_ms / 1000.0
        for rid in out.first_token:
            f = self.flights[rid]
            f.first_token_s = first_s
            if f.prefill is None:
                self.tier.record(now, w.books, f.router, FIRST_TOKEN_LOCAL)
                f.cached_len = w.sched.request_hit_len(rid) if rid not in out.finished else f.cached_len
        for rid in out.prefill_done:
            f = self.flights[rid]
            f.prefill_done = True
            f.cached_len = w.sched.request_hit_len(rid)
            events += self._maybe_send(now, f)
        events += self._allocated(now, out.allocated)
        for rid in out.finished:
            events += self._finish(now, self.flights.pop(rid))
        return events + self._kick(w, now)

    def _maybe_send(self, now: float, f: _Flight) -> list[Event]:
        if not f.prefill_done or f.send_tokens is None or f.prefill is None:
            return []
        f.kv_bytes = f.send_tokens * self.kv_bytes_per_token
        done_s = self.cluster.link_for(f.prefill.worker_id, f.decode.worker_id).enqueue(now, f.kv_bytes)
        return [(done_s, XFER, f.spec.request_id)]

    def _transfer_done(self, now: float, rid: object) -> list[Event]:
        assert isinstance(rid, str)
        f = self.flights[rid]
        assert f.prefill is not None
        for w in (f.prefill, f.decode):
            w.observe(now)
        f.prefill.sched.release(rid)
        self.tier.record(now, f.prefill.books, f.router, RELEASE_PREFILL)
        f.decode.sched.kv_arrived(rid)
        return self._kick(f.prefill, now) + self._kick(f.decode, now)

    # ---- endings -------------------------------------------------------------------------------
    def _finish(self, now: float, f: _Flight) -> list[Event]:
        self.tier.record(now, f.decode.books, f.router, FINISH, f.spec.request_id)
        self.tier.close(f.router)
        spec = f.spec
        full = spec.input_len * self.kv_bytes_per_token
        self.records.append(RequestRecord(
            spec.request_id, spec.session_id, spec.turn, spec.input_len, spec.output_len, f.arrival_s,
            f.first_token_s, now, f.route.kind.value, f.route.reason, f.cached_len,
            f.kv_bytes, full - f.kv_bytes,
        ))  # fmt: skip
        return self._next_turn(now, spec)

    def _fail(self, now: float, spec: TurnSpec, route: Route | None, error: str) -> list[Event]:
        self.records.append(RequestRecord(
            spec.request_id, spec.session_id, spec.turn, spec.input_len, spec.output_len, now, None, None,
            route.kind.value if route else None, route.reason if route else None, error=error,
        ))  # fmt: skip
        return self._next_turn(now, spec)

    def _next_turn(self, now: float, spec: TurnSpec) -> list[Event]:
        nxt = self.follow.pop(spec.request_id, None)
        return [] if nxt is None else [(now + nxt.think_time_s, ARRIVE, nxt)]
