"""The worker's ZMQ PUB of :class:`~sglang_ppd.protocol.telemetry.WorkerTelemetry` snapshots.

The scheduler thread calls :meth:`TelemetryPublisher.update` once per iteration with the fields it
already has at hand (cheap: no I/O). A background thread sends a snapshot when the fields change
(at most every ``min_interval_ms``) and at least every ``period_ms``, so a subscriber that joins
late or drops a message is current within one period.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import zmq

from sglang_ppd.protocol import telemetry as wire


class TelemetryPublisher:
    def __init__(
        self,
        endpoint: str,
        worker_url: str,
        role: str,
        period_ms: float = 100.0,
        min_interval_ms: float = 5.0,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 64)
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._worker_url = worker_url
        self._role = role
        self._period_s = period_ms / 1000.0
        self._min_interval_s = min_interval_ms / 1000.0
        self._cv = threading.Condition()
        self._fields: dict[str, Any] | None = None
        self._dirty = False
        self._stop = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="ppd-telemetry", daemon=True)
        self._thread.start()

    def update(self, **fields: Any) -> None:
        with self._cv:
            if fields != self._fields:
                self._fields = fields
                self._dirty = True
                self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=2.0)
        self._sock.close(linger=0)

    def _snapshot(self, fields: dict[str, Any]) -> wire.WorkerTelemetry:
        self._seq += 1
        return wire.WorkerTelemetry(
            worker_url=self._worker_url, role=self._role, seq=self._seq, supports_local_prefill=True, **fields
        )

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._dirty and not self._stop:
                    self._cv.wait(timeout=self._period_s)
                if self._stop:
                    return
                fields, self._dirty = self._fields, False
            if fields is not None:
                # No subscriber keeping up: telemetry is best effort, the next one follows.
                with contextlib.suppress(zmq.Again):
                    self._sock.send_multipart(wire.encode(self._snapshot(fields)), flags=zmq.NOBLOCK)
            # Rate-limit change-driven sends; a change during the pause is sent right after it.
            with self._cv:
                if self._stop:
                    return
                self._cv.wait_for(lambda: self._stop, timeout=self._min_interval_s)
