"""The router's live view of one worker, and the registry of all of them.

``WorkerState`` is mutable router state (updated by subscribers, the health loop and dispatch);
:meth:`WorkerState.snapshot` freezes it into the contract's ``WorkerSnapshot`` at decision time,
with ``age_ms`` measured on the router's own monotonic clock from the last telemetry received.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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

    def record_load(self, load: LoadSummary, source: str) -> None:
        if self.telemetry_source == "ppd" and source != "ppd" and self._fresh(2.0):
            return  # the richer snapshot wins while it is alive
        self.load, self.telemetry_source, self.telemetry_rx_s = load, source, time.monotonic()
        self.telemetry = None

    def _fresh(self, max_age_s: float) -> bool:
        return self.telemetry_rx_s is not None and time.monotonic() - self.telemetry_rx_s < max_age_s

    def snapshot(self, now_s: float) -> WorkerSnapshot:
        t, load = self.telemetry, self.load
        common = dict(
            worker_id=self.url,
            role=self.role,
            age_ms=self.age_ms(now_s),
            num_inflight=self.num_inflight,
            num_local_inflight=self.num_local_inflight,
            supports_local_prefill=self.supports_local_prefill,
            healthy=self.healthy,
        )
        if t is not None:
            return WorkerSnapshot(
                **common,  # type: ignore[arg-type]
                num_running=t.num_running,
                num_waiting=t.num_waiting,
                queued_prefill_tokens=t.queued_prefill_tokens + t.queued_local_prefill_tokens,
                kv_used_tokens=t.kv_used_tokens,
                kv_capacity_tokens=t.kv_capacity_tokens,
                decode_iter_ms=t.decode_iter_ms,
                mixed_iter_ms=t.mixed_iter_ms,
                running_context_tokens=t.running_context_tokens,
                num_local_prefills=t.num_local_prefills,
            )
        if load is not None:
            return WorkerSnapshot(
                **common,  # type: ignore[arg-type]
                num_running=load.num_running,
                num_waiting=load.num_waiting,
                queued_prefill_tokens=load.queued_prefill_tokens,
                kv_used_tokens=load.kv_used_tokens,
                kv_capacity_tokens=load.kv_capacity_tokens,
            )
        return WorkerSnapshot(**common)  # type: ignore[arg-type]

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()


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
