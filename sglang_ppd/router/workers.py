"""The router's live view of one worker, and the registry of all of them.

``WorkerState`` is mutable router state (updated by subscribers, the health loop and dispatch);
:meth:`WorkerState.snapshot` freezes it into the contract's ``WorkerSnapshot`` at decision time
through ``core.observe`` (as the simulator does), with ``age_ms`` measured on the router's own
monotonic clock from the last telemetry received, reconciled with the router's own requests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sglang_ppd.core.lifecycle import Lifecycle
from sglang_ppd.core.observe import Sample, checked_sample, observe
from sglang_ppd.core.types import Role, WorkerSnapshot
from sglang_ppd.protocol.load_stat import LoadSummary
from sglang_ppd.protocol.server_info import ServerInfo
from sglang_ppd.protocol.telemetry import WorkerTelemetry
from sglang_ppd.router.prefix_index import ApproxPrefixIndex, ExactPrefixIndex


@dataclass(slots=True)
class WorkerState:
    url: str
    role: Role
    bootstrap_port: int | None = None
    info: ServerInfo | None = None
    healthy: bool = True
    num_failures: int = 0
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
    num_dropped_messages: int = 0
    num_kv_gaps: int = 0
    num_subscriber_resets: int = 0
    """ZMQ subscriptions cut (oversized/malformed message, publisher gone) and reopened."""
    sample: Sample | None = None
    """The last load numbers received (either source), checked by ``core.observe``."""
    num_rejected_fields: int = 0
    """Published fields dropped as out of range or non-finite (counted, never fatal)."""
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    """This router's requests on the worker since its last sample (exact residents)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def supports_local_prefill(self) -> bool:
        return self.role is Role.DECODE and self.info is not None and self.info.supports_local_prefill

    def age_ms(self, now_s: float) -> float | None:
        return None if self.telemetry_rx_s is None else 1000.0 * (now_s - self.telemetry_rx_s)

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


class WorkerRegistry:
    """Workers in registration order (the contract's tie-break order)."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerState] = {}

    def add(self, state: WorkerState) -> None:
        if state.url in self._workers:
            raise ValueError(f"worker {state.url} is already registered")
        self._workers[state.url] = state

    def remove(self, url: str) -> WorkerState:
        try:
            return self._workers.pop(url)
        except KeyError:
            raise KeyError(f"no worker {url} is registered") from None

    def get(self, url: str) -> WorkerState | None:
        return self._workers.get(url)

    def all(self) -> list[WorkerState]:
        return list(self._workers.values())

    def by_role(self, role: Role) -> list[WorkerState]:
        return [w for w in self._workers.values() if w.role is role]

    def __len__(self) -> int:
        return len(self._workers)
