"""The router's state and its control plane: workers, their subscribers and health, and decisions.

Probing workers over HTTP (discovery, health checks, load polling) is in
:mod:`sglang_ppd.router.worker_probe`; the data plane (dispatching one request) in
:mod:`sglang_ppd.router.dispatch` and :mod:`sglang_ppd.router.attempt`; HTTP handlers in
:mod:`sglang_ppd.router.app`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Collection
from typing import Any

import aiohttp
import zmq.asyncio

from sglang_ppd.core.correction import Prediction, Residual, predict_ttft
from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.guard import guard
from sglang_ppd.core.policy import Policy
from sglang_ppd.core.stepmodel import StepModel
from sglang_ppd.core.types import ClusterSnapshot, LinkSnapshot, RequestFeatures, Role, Route, Slo
from sglang_ppd.router import worker_probe
from sglang_ppd.router.admission import Admission
from sglang_ppd.router.breaker import Breaker
from sglang_ppd.router.config import RouterConfig, WorkerSpec, normalize_url
from sglang_ppd.router.dispatch import Upstream
from sglang_ppd.router.health import Reliability
from sglang_ppd.router.kv_sessions import KvSessions
from sglang_ppd.router.metrics import RouterMetrics
from sglang_ppd.router.prefix import PrefixLookup
from sglang_ppd.router.security import redact_url_secrets
from sglang_ppd.router.sessions import MAX_SESSIONS, SessionMap
from sglang_ppd.router.tokenizer import Tokenizer
from sglang_ppd.router.upstream_pool import Pool
from sglang_ppd.router.workers import WorkerRegistry, WorkerState

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self, cfg: RouterConfig, policy: Policy, profile: CostProfile, tokenizer: Tokenizer, policy_name: str
    ) -> None:
        self.cfg, self.policy, self.profile, self.tokenizer = cfg, policy, profile, tokenizer
        self.step_model = StepModel.of(profile)
        self.pooled = Residual()
        """Every worker's samples together (``core.correction.factor_of``)."""
        self.prediction: Prediction | None = None
        """The model's TTFT for the route :meth:`decide` returned last (taken by the caller at once,
        before any await), when ``self_correct``."""
        self.policy_name = policy_name
        self.slo = Slo(**cfg.slo.model_dump())
        self.registry = WorkerRegistry()
        self.metrics = RouterMetrics()
        self.sessions = SessionMap(MAX_SESSIONS)
        """Each client session's latest decode worker (is a request a Turn 2+?)."""
        self.kv_sessions = KvSessions(MAX_SESSIONS)
        self.prefix = PrefixLookup(self.registry, self.metrics.prefix_lookup, self.kv_sessions)
        self.features = self.prefix.features
        self._background: set[asyncio.Task[Any]] = set()
        self.model_name = cfg.model_name or "default"
        self.started_s = time.monotonic()
        self.pd_transfer_bytes_inflight = 0
        self.admission = Admission(cfg.max_inflight, cfg.max_queued, cfg.max_queue_wait_s)
        self.zmq_ctx = zmq.asyncio.Context()
        self._control: aiohttp.ClientSession | None = None
        self.upstream = Upstream(Pool(cfg.connect_timeout_s), lambda: self.control, self.keep, self._refused)
        """The data path's one upstream client API over pooled keep-alive connections."""
        self._health_task: asyncio.Task[None] | None = None
        self.reliability = Reliability(self)

    @property
    def num_inflight(self) -> int:
        return self.admission.num_inflight

    @property
    def num_queued(self) -> int:
        return self.admission.num_queued

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._control = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.control_timeout_s))
        for spec in self.cfg.workers:
            await self.add_worker(spec)
        self._health_task = asyncio.create_task(worker_probe.health_loop(self))

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a fire-and-forget task (an abort, a prefill reply finishing) until it is done."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:  # let in-flight aborts reach the workers, briefly
            await asyncio.wait(set(self._background), timeout=1.0)
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._health_task is not None:
            self._health_task.cancel()
        self.reliability.close()
        for w in self.registry.all():
            w.cancel_tasks()
        if self._control is not None:
            await self._control.close()
        self.upstream.close()
        self.zmq_ctx.destroy(linger=0)

    @property
    def control(self) -> aiohttp.ClientSession:
        assert self._control is not None, "Router.start() was not awaited"
        return self._control

    # --- workers ---------------------------------------------------------------------------------
    async def add_worker(self, spec: WorkerSpec) -> WorkerState:
        url = normalize_url(spec.url)
        redact_url_secrets(url)
        breaker = Breaker(self.cfg.breaker_failures, self.cfg.breaker_cooldown_s)
        w = WorkerState(url=url, role=Role(spec.role), breaker=breaker, bootstrap_port=spec.bootstrap_port)
        w.pooled = self.pooled if self.cfg.self_correct else None
        self.registry.add(w)
        if not await self._discover(w):
            w.healthy = False
            log.warning(
                "worker %s did not answer /server_info; it stays out of rotation until it does", w.name
            )
        return w

    async def remove_worker(self, url: str) -> WorkerState:
        w = self.registry.remove(normalize_url(url))
        w.on_removed()
        return w

    async def _discover(self, w: WorkerState) -> bool:
        """Read ``/server_info`` and (re)start the worker's subscribers. False if unreachable."""
        return await worker_probe.discover(self, w)

    def _refused(self, url: str) -> None:
        w = self.registry.get(url)
        if w is not None:
            self.note_failure(w, refused=True)

    def note_failure(self, w: WorkerState, refused: bool = False) -> None:
        """A failed health check or call; ``refused`` (nothing listens) takes it out at once."""
        if w.on_probe_failure(refused, self.cfg.health_failures):
            log.warning("worker %s taken out of rotation after %d failures", w.name, w.num_failures)

    # --- decisions -------------------------------------------------------------------------------
    def snapshot(self, exclude: Collection[str] = ()) -> ClusterSnapshot:
        now = time.monotonic()
        workers = []
        for w in self.registry.all():
            snap = w.snapshot(now)
            if w.url in exclude and snap.healthy:
                snap = dataclasses.replace(snap, healthy=False)
            workers.append(snap)
        link = LinkSnapshot(
            bandwidth_bytes_per_s=self.cfg.link_bandwidth_gb_s * 1e9,
            queued_bytes=self.pd_transfer_bytes_inflight,
            age_ms=0.0,
        )
        return ClusterSnapshot(workers=tuple(workers), link=link)

    def decide(self, features: RequestFeatures, exclude: Collection[str] = ()) -> Route:
        t0 = time.perf_counter()  # the snapshot is part of every decision's cost
        snap = self.snapshot(exclude)
        route = guard(self.policy.decide(features, snap, self.slo), features, snap, self.slo, self.step_model)
        self.metrics.decision.observe(time.perf_counter() - t0)
        if self.cfg.self_correct:
            kv = self.profile.kv_bytes_per_token
            self.prediction = predict_ttft(route, features, snap, self.slo, self.step_model, kv)
        return route

    def learn(self, prediction: Prediction | None, ttft_ms: float) -> None:
        """A streamed request's realized TTFT: the prefilling worker's residual learns from it."""
        if prediction is None:
            return
        w = self.registry.get(prediction.worker_id)
        if w is not None:
            w.residual.update(prediction, ttft_ms)
            self.pooled.update(prediction, ttft_ms)
