"""The simulated workers and links, and the telemetry a router would have of them.

Telemetry: each worker publishes its load every ``publish_period_ms`` at its own (seeded) phase.
Worker state only changes at events, so the value published at tick τ is the state before the first
change after τ: :meth:`SimWorker.observe` is called before every change and at decision time, and
captures the state for the latest tick it has passed. The router therefore sees exactly what a
periodic publisher would have sent, with ``age_ms`` = now - tick. Inside a decode leap the published
context is the one at the leap's start (off by at most B tokens per step leapt). The router's own
in-flight counts and the radix hit lengths (KV events) are exact. Snapshots come from
``core.observe``, as in the live router, reconciled with the router's own request lifecycle since
the sample (``core.lifecycle``). With several router replicas (``sim.replicas``) each has its own
books of every worker; the published sample is the same for all.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.observe import Sample, checked_sample, observe
from sglang_ppd.core.types import ClusterSnapshot, LinkSnapshot, Role, WorkerSnapshot
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.link import Link
from sglang_ppd.sim.replicas import Books
from sglang_ppd.sim.scheduler import BatchScheduler, Iteration, LoadStats

LEAP_STEPS = 1 << 30
"""Decode-only iterations are leapt over until the next finish (or cut by new work)."""


@dataclass(slots=True)
class SimWorker:
    index: int
    worker_id: str
    role: Role
    sched: BatchScheduler
    phase_s: float
    period_s: float
    published: LoadStats | None = None
    published_s: float = -math.inf
    iteration: Iteration | None = None
    started_s: float = 0.0
    version: int = 0
    books: list[Books] = field(default_factory=lambda: [Books()])
    """Each router replica's account of its requests here (one router: one entry)."""

    def observe(self, now_s: float) -> None:
        """Capture the state for the last publish tick at or before ``now_s`` (call before a change)."""
        if now_s < self.phase_s:
            return
        tick = self.phase_s + math.floor((now_s - self.phase_s) / self.period_s) * self.period_s
        if tick > self.published_s:
            self.published = self.sched.stats()
            self.published_s = tick
            for b in self.books:
                b.on_sample(tick)

    def kick(self, now_s: float) -> float | None:
        """Start an iteration if idle, or cut a decode leap so new work joins at the next step.
        Returns the time of a (new) iteration-done event for ``self.version``, if any."""
        it = self.iteration
        if it is None:
            it = self.sched.next_iteration(LEAP_STEPS)
            if it is None:
                return None
            self.iteration, self.started_s = it, now_s
            self.version += 1
            return now_s + it.duration_ms / 1000.0
        if it.num_steps > 1:
            cut = self.sched.truncate(it, (now_s - self.started_s) * 1000.0)
            if cut is not it:
                self.iteration = cut
                self.version += 1
                return max(now_s, self.started_s + cut.duration_ms / 1000.0)
        return None

    def snapshot(self, now_s: float, router: int = 0) -> WorkerSnapshot:
        """What router replica ``router`` knows of this worker at ``now_s``."""
        self.observe(now_s)
        b = self.books[router]
        b.deliver(now_s)
        s = self.published
        sample = None if s is None else sample_of(s, self.sched.tbt_budget_ms)
        return observe(
            self.worker_id, self.role, sample, None if s is None else 1000.0 * (now_s - self.published_s),
            num_inflight=b.num_inflight, num_local_inflight=b.num_local_inflight,
            since=b.lifecycle.since(), supports_local_prefill=self.role is Role.DECODE,
        )  # fmt: skip


def sample_of(s: LoadStats, tbt_budget_ms: float | None) -> Sample:
    """What the simulated worker publishes, as every host's telemetry reaches ``core.observe``."""
    sample, _ = checked_sample(
        s.num_running, s.num_waiting, s.queued_prefill_tokens, s.kv_used_tokens, s.kv_capacity_tokens,
        s.running_context_tokens, s.num_local_prefills, s.decode_iter_ms, s.mixed_iter_ms, tbt_budget_ms,
    )  # fmt: skip
    return sample


@dataclass(slots=True)
class SimCluster:
    config: SimConfig
    profile: CostProfile
    workers: list[SimWorker]
    links: dict[str, Link]
    period_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.period_s = self.config.publish_period_ms / 1000.0

    @classmethod
    def build(
        cls, config: SimConfig, profile: CostProfile, *, decode_cache: bool, tbt_budget_ms: float, seed: int
    ) -> SimCluster:
        rng = random.Random(seed)
        period_s = config.publish_period_ms / 1000.0
        workers: list[SimWorker] = []
        for role, num, prefix, retain in (
            (Role.PREFILL, config.num_prefill, "p", config.prefill_cache),
            (Role.DECODE, config.num_decode, "d", decode_cache),
        ):
            for i in range(num):
                sched = BatchScheduler(
                    role, profile, retain_cache=retain, kv_capacity_tokens=config.kv_capacity_tokens,
                    chunked_prefill_size=config.chunked_prefill_size,
                    tbt_budget_ms=tbt_budget_ms if role is Role.DECODE else None,
                    min_chunk_len=config.min_chunk_len,
                )  # fmt: skip
                phase = rng.uniform(0.0, period_s)
                books = [Books() for _ in range(config.num_routers)]
                w = SimWorker(len(workers), f"{prefix}{i}", role, sched, phase, period_s, books=books)
                workers.append(w)
        bw = config.link_gbytes_per_s * 1e9
        keys = cls._link_keys(config)
        links = {k: Link(bw, profile.transfer_setup_ms) for k in keys}
        return cls(config, profile, workers, links)

    @staticmethod
    def _link_keys(config: SimConfig) -> list[str]:
        if config.link_topology == "shared":
            return ["*"]
        ps = [f"p{i}" for i in range(config.num_prefill)]
        if config.link_topology == "per_prefill":
            return ps
        return [f"{p}->d{j}" for p in ps for j in range(config.num_decode)]

    def link_for(self, prefill_id: str, decode_id: str) -> Link:
        topo = self.config.link_topology
        if topo == "shared":
            return self.links["*"]
        return self.links[prefill_id if topo == "per_prefill" else f"{prefill_id}->{decode_id}"]

    def link_snapshot(self, now_s: float) -> LinkSnapshot:
        """The busiest link's backlog at the last cluster-wide publish tick (a router learns link
        load from telemetry too); one figure because the contract has one link."""
        tick = math.floor(now_s / self.period_s) * self.period_s
        queued = max(link.queued_bytes_at(tick, 2 * self.period_s) for link in self.links.values())
        bw = next(iter(self.links.values())).bandwidth_bytes_per_s
        return LinkSnapshot(bw, queued, 1000.0 * (now_s - tick))

    def snapshot(self, now_s: float, router: int = 0) -> ClusterSnapshot:
        workers = tuple(w.snapshot(now_s, router) for w in self.workers)
        return ClusterSnapshot(workers, self.link_snapshot(now_s))
