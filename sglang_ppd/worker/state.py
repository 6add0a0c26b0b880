"""Per-scheduler PPD state of a decode server: the local queue, the iteration model and chunk
budget, the telemetry publisher and the iteration log. Plain Python: the SGLang scheduler object is
only read (``sched``), so this stays testable without sglang."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

from sglang_ppd.worker.admission import LocalQueue
from sglang_ppd.worker.budget import BudgetPolicy, IterationClock, IterationModel, IterationSample
from sglang_ppd.worker.options import PpdOptions

logger = logging.getLogger("sglang_ppd.worker")


class PpdState:
    def __init__(self, sched: Any, opts: PpdOptions, tp_rank: int) -> None:
        prealloc = sched.disagg_decode_prealloc_queue
        self.opts = opts
        reserve = int(prealloc.num_reserved_decode_tokens)
        self.queue: LocalQueue[Any] = LocalQueue(reserve_decode_tokens=reserve)
        self.model = IterationModel(opts.prior_ms_per_token, opts.prior_mixed_overhead_ms)
        self.policy = BudgetPolicy(opts.tbt_slo_ms, opts.min_chunk_len, opts.max_chunk_len)
        self.clock = IterationClock(lag=1 if sched.enable_overlap else 0)
        self.pub = None
        self.last_pub_s = 0.0
        self.log = None
        self.log_flush_s = 0.0
        self.next_info: dict[str, Any] | None = None
        self.gpu_events: deque[tuple[Any, Any, dict[str, Any]]] = deque()
        self.num_local_done = 0
        if tp_rank == 0:
            from sglang_ppd.worker.telemetry_pub import TelemetryPublisher

            if opts.telemetry_endpoint:
                self.pub = TelemetryPublisher(
                    opts.telemetry_endpoint, opts.worker_url or "", "decode", opts.telemetry_period_ms
                )
                logger.info("ppd telemetry on %s", self.pub.endpoint)
            if opts.iter_log:
                self.log = open(opts.iter_log, "a", buffering=1 << 16)  # noqa: SIM115 - process lifetime

    def on_sample(self, s: IterationSample) -> None:
        self.model.add(s)
        if self.log is not None:
            self.write({"iter_ms": round(s.iter_ms, 4), **(s.info or {})})

    def write(self, row: dict[str, Any]) -> None:
        assert self.log is not None
        self.log.write(json.dumps(row) + "\n")
        now = time.monotonic()
        if now - self.log_flush_s > 1.0:
            self.log.flush()
            self.log_flush_s = now

    def drain_gpu_events(self) -> None:
        """Logs the forward passes whose CUDA events completed (never blocks)."""
        while self.gpu_events and self.gpu_events[0][1].query():
            start, end, info = self.gpu_events.popleft()
            self.write({**info, "row": "gpu", "gpu_ms": round(start.elapsed_time(end), 4)})
