"""The router's live view of one worker (the one owner of its state), and the registry of all of them.

Every event about a worker goes through its :class:`WorkerState`: dispatch and its end (a
:class:`Lease`), first token, the attempt's verdict (success, failure, and which side failed),
client aborts, health probes, telemetry, and add/remove. A re-added worker is a new ``WorkerState``
with a new ``generation``; requests still in flight on the old one settle on the old object, so
they can never corrupt the new one's counts.

``WorkerState`` is mutable router state; :meth:`WorkerState.snapshot` freezes it into the contract's
``WorkerSnapshot`` at decision time through ``core.observe`` (as the simulator does), with
``age_ms`` measured on the router's own monotonic clock from the last telemetry received,
reconciled with the router's own requests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sglang_ppd.core.correction import Residual, factor_of
from sglang_ppd.core.lifecycle import Lifecycle
from sglang_ppd.core.observe import Sample, checked_sample, observe
from sglang_ppd.core.types import Role, WorkerSnapshot
from sglang_ppd.protocol.load_stat import LoadSummary
from sglang_ppd.protocol.server_info import ServerInfo
from sglang_ppd.protocol.telemetry import WorkerTelemetry
from sglang_ppd.router.breaker import Breaker
from sglang_ppd.router.prefix_index import ApproxPrefixIndex, ExactPrefixIndex
from sglang_ppd.router.security import public_url


@dataclass(slots=True, eq=False)
class WorkerState:
    url: str
    role: Role
    breaker: Breaker = field(default_factory=lambda: Breaker(5, 5.0))
    """The router passes one built from its config (``breaker_failures``, ``breaker_cooldown_s``)."""
    bootstrap_port: int | None = None
    generation: int = 0
    """Set by the registry on add; a worker removed and added again is a new generation."""
    info: ServerInfo | None = None
    healthy: bool = True
    num_failures: int = 0
    """Consecutive failed health checks."""
    num_inflight: int = 0
    num_local_inflight: int = 0
    """LOCAL/DEFLECT routes dispatched here and not yet past their first token (or failed)."""
    telemetry_source: str | None = None
    """"ppd", "loadstat" or "v1/loads": where the last load numbers came from."""
    telemetry_rx_s: float | None = None
    telemetry: WorkerTelemetry | None = None
    load: LoadSummary | None = None
    exact_index: ExactPrefixIndex | None = None
    approx_index: ApproxPrefixIndex | None = None
    num_kv_events: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Messages from this worker dropped, by ``feed:reason`` (malformed, bad block hash, a decoder
    error's type); a message's single bad fields are ``num_rejected_fields`` instead."""
    num_kv_gaps: int = 0
    num_subscriber_resets: int = 0
    """ZMQ subscriptions cut (oversized/malformed message, publisher gone) and reopened."""
    sample: Sample | None = None
    """The last load numbers received (either source), checked by ``core.observe``."""
    num_rejected_fields: int = 0
    """Published fields dropped as out of range or non-finite (counted, never fatal)."""
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    """This router's requests on the worker since its last sample (exact residents)."""
    residual: Residual = field(default_factory=Residual)
    """Measured over predicted prefill time here (``core.correction``), when the router corrects."""
    pooled: Residual | None = None
    """The router's cluster-wide residual when it corrects (``self_correct``), else ``None``."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    name: str = ""
    """The URL with any password masked: the only form that goes into logs, errors and metrics."""

    def __post_init__(self) -> None:
        self.name = public_url(self.url)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def num_dropped_messages(self) -> int:
        return sum(self.dropped.values())

    @property
    def supports_local_prefill(self) -> bool:
        return self.role is Role.DECODE and self.info is not None and self.info.supports_local_prefill

    def age_ms(self, now_s: float) -> float | None:
        return None if self.telemetry_rx_s is None else 1000.0 * (now_s - self.telemetry_rx_s)

    def silent(self, now_s: float, max_age_ms: float) -> bool:
        """Its telemetry came once and has stopped for longer than ``max_age_ms`` (a stopped or
        wedged process; a worker never heard from is unknown, not silent)."""
        age = self.age_ms(now_s)
        return age is not None and age > max_age_ms

    # --- requests ----------------------------------------------------------------------------------
    def dispatch(self, rid: str, local: bool, prompt_len: int, output_len: int) -> Lease:
        """A request goes here (``local``: a local/deflected prefill on this decode worker). On a
        decode worker it is a resident from now on (``core.lifecycle``) until its lease ends."""
        self.num_inflight += 1
        self.num_local_inflight += local
        resident = self.role is Role.DECODE
        if resident:
            self.lifecycle.on_dispatch(rid, prompt_len, output_len)
        return Lease(self, rid if resident else None, local, self.breaker.on_dispatch())

    def on_success(self) -> None:
        """The worker answered (a first token, a whole reply, or a 4xx of its own)."""
        self.breaker.on_success()

    def on_failure(self, connection_lost: bool) -> bool:
        """It failed a request it is to blame for; a lost connection may mean the process (and its
        KV cache) is gone: its prefix index is dropped at once. True when an index was dropped."""
        self.breaker.on_failure()
        return connection_lost and self.drop_index()

    def drop_index(self) -> bool:
        dropped = False
        for index in (self.exact_index, self.approx_index):
            if index is not None and index.num_blocks():
                index.clear()
                dropped = True
        return dropped

    def on_removed(self) -> None:
        """Removed from the registry: its feeds stop and its blocks leave the shared table. Requests
        still in flight keep their leases on this object, never on a re-added one."""
        self.cancel_tasks()
        if self.exact_index is not None:
            self.exact_index.clear()

    # --- health ------------------------------------------------------------------------------------
    def on_probe_ok(self) -> None:
        self.num_failures = 0

    def on_probe_failure(self, refused: bool, threshold: int) -> bool:
        """A failed health check or call; ``refused`` (nothing listens) takes it out at once. True
        when this takes it out of rotation."""
        self.num_failures += 1
        if not self.healthy or not (refused or self.num_failures >= threshold):
            return False
        self.healthy = False
        # Its cache state is unknown from now on: nothing may be routed on it.
        for index in (self.exact_index, self.approx_index):
            if index is not None:
                index.clear()
        if refused:
            self.info = None
        return True

    # --- telemetry ---------------------------------------------------------------------------------
    def record_telemetry(self, t: WorkerTelemetry) -> None:
        self.telemetry, self.telemetry_source, self.telemetry_rx_s = t, "ppd", time.monotonic()
        self._take_sample(sample_of_telemetry(t))

    def record_load(self, load: LoadSummary, source: str) -> None:
        if self.telemetry_source == "ppd" and source != "ppd" and self._fresh(2.0):
            return  # the richer snapshot wins while it is alive
        self.load, self.telemetry_source, self.telemetry_rx_s = load, source, time.monotonic()
        self.telemetry = None
        self._take_sample(sample_of_load(load))

    def _take_sample(self, checked: tuple[Sample, int]) -> None:
        self.sample, num_rejected = checked
        self.num_rejected_fields += num_rejected
        self.lifecycle.on_sample()

    def _fresh(self, max_age_s: float) -> bool:
        return self.telemetry_rx_s is not None and time.monotonic() - self.telemetry_rx_s < max_age_s

    def snapshot(self, now_s: float) -> WorkerSnapshot:
        return observe(
            self.url, self.role, self.sample, self.age_ms(now_s),
            num_inflight=self.num_inflight, num_local_inflight=self.num_local_inflight,
            since=self.lifecycle.since(), supports_local_prefill=self.supports_local_prefill,
            healthy=self.healthy,
            prefill_cost_factor=1.0 if self.pooled is None else factor_of(self.residual, self.pooled),
        )  # fmt: skip

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()


def sample_of_telemetry(t: WorkerTelemetry) -> tuple[Sample, int]:
    """A decode worker publishes its local-prefill backlog in both ``queued_prefill_tokens`` and
    ``queued_local_prefill_tokens`` (the worker extension and the emulator alike); a prefill worker
    only the first. The backlog is counted once: the larger of the two."""
    queued = t.queued_prefill_tokens
    if isinstance(queued, int) and isinstance(t.queued_local_prefill_tokens, int):
        queued = max(queued, t.queued_local_prefill_tokens)
    return checked_sample(
        t.num_running, t.num_waiting, queued, t.kv_used_tokens, t.kv_capacity_tokens,
        t.running_context_tokens, t.num_local_prefills, t.decode_iter_ms, t.mixed_iter_ms, t.tbt_budget_ms,
    )  # fmt: skip


def sample_of_load(load: LoadSummary) -> tuple[Sample, int]:
    return checked_sample(
        load.num_running, load.num_waiting, load.queued_prefill_tokens, load.kv_used_tokens,
        load.kv_capacity_tokens,
    )  # fmt: skip


@dataclass(slots=True, eq=False)
class Lease:
    """One request's hold on one worker, from dispatch to release: its in-flight count, its local
    prefill until the first token, and the breaker trial it may carry. Ending it is idempotent."""

    worker: WorkerState
    resident: str | None
    """The request id it is a resident under (decode side), ended with the lease."""
    local: bool
    trial: int | None
    held: bool = True

    def first_token(self) -> None:
        if self.local:
            self.local = False
            self.worker.num_local_inflight -= 1

    def verdict(self, ok: bool, connection_lost: bool = False) -> bool:
        """The worker succeeded (or answered a 4xx) or failed; True when its index was dropped."""
        self.trial = None
        if ok:
            self.worker.on_success()
            return False
        return self.worker.on_failure(connection_lost)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.first_token()
        self.worker.num_inflight -= 1
        if self.resident is not None:
            self.worker.lifecycle.on_finish(self.resident)
        if self.trial is not None:  # no verdict (the client left): the next request may try
            self.worker.breaker.release(self.trial)


class WorkerRegistry:
    """Workers in registration order (the contract's tie-break order)."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerState] = {}
        self._generations = itertools.count(1)

    def add(self, state: WorkerState) -> None:
        if state.url in self._workers:
            raise ValueError(f"worker {state.name} is already registered")
        state.generation = next(self._generations)
        self._workers[state.url] = state

    def remove(self, url: str) -> WorkerState:
        try:
            return self._workers.pop(url)
        except KeyError:
            raise KeyError(f"no worker {public_url(url)} is registered") from None

    def get(self, url: str) -> WorkerState | None:
        return self._workers.get(url)

    def all(self) -> list[WorkerState]:
        return list(self._workers.values())

    def by_role(self, role: Role) -> list[WorkerState]:
        return [w for w in self._workers.values() if w.role is role]

    def __len__(self) -> int:
        return len(self._workers)
