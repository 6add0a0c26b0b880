"""What the emulated worker reports about itself: ``/server_info``, ``/v1/loads``, LoadStat and
WorkerTelemetry, all from the scheduler's live state."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sglang_ppd.core.types import Role
from sglang_ppd.protocol import load_stat, server_info, telemetry

if TYPE_CHECKING:
    from sglang_ppd.emulator.engine import Engine

VERSION = "0.5.17"
"""The SGLang release whose wire formats the emulator speaks."""


@dataclass(frozen=True, slots=True)
class Ports:
    http: int
    bootstrap: int | None
    kv_events: int
    kv_replay: int | None
    load: int
    telemetry: int


def server_info_body(engine: Engine, ports: Ports) -> dict[str, Any]:
    cfg = engine.cfg
    decode = cfg.role is Role.DECODE
    kv_config = {"publisher": "zmq", "endpoint": f"tcp://*:{ports.kv_events}", "topic": ""}
    if ports.kv_replay is not None:
        kv_config["replay_endpoint"] = f"tcp://*:{ports.kv_replay}"
    kv_block: dict[str, Any] = {
        "publisher": "zmq",
        "endpoint_host": "*",
        "endpoint_port_base": ports.kv_events,
        "topic": "",
        "block_size": cfg.page_size,
        "dp_size": 1,
        "load_endpoint_port_base": ports.load,
        "load_topic": load_stat.LOAD_TOPIC,
    }
    if ports.kv_replay is not None:
        kv_block["replay_endpoint_port_base"] = ports.kv_replay
    return {
        "model_path": cfg.model_name,
        "served_model_name": cfg.model_name,
        "tokenizer_path": None,
        "port": ports.http,
        "disaggregation_mode": cfg.role.value,
        "disaggregation_bootstrap_port": ports.bootstrap,
        "disaggregation_transfer_backend": "emulated",
        "disaggregation_decode_enable_radix_cache": decode and cfg.decode_radix_cache,
        "enable_mixed_chunk": decode and cfg.ppd,
        "page_size": cfg.page_size,
        "dp_size": 1,
        "chunked_prefill_size": engine.sched.chunk_size,
        "max_running_requests": cfg.profile.max_running_requests,
        "max_total_num_tokens": engine.sched.capacity,
        "kv_events_config": json.dumps(kv_config),
        "kv_events": kv_block,
        **(
            {server_info.UPSTREAM_LOCAL_PREFILL_FIELD: True}
            if cfg.conditional_agg
            else {
                server_info.LOCAL_PREFILL_FIELD: decode and cfg.ppd,
                server_info.TELEMETRY_ENDPOINT_FIELD: f"tcp://*:{ports.telemetry}",
            }
        ),
        "version": VERSION,
        "emulator": {
            "profile": cfg.profile.name,
            "time_scale": cfg.time_scale,
            "link_bandwidth_bytes_per_s": cfg.link_bandwidth_bytes_per_s,
            "tbt_budget_ms": cfg.tbt_budget_ms,
        },
        "internal_states": [{"last_gen_throughput": 0.0, "num_iterations": engine.num_iterations}],
    }


def loads_body(engine: Engine) -> dict[str, Any]:
    s = engine.sched.stats()
    cached = engine.radix.unlocked_tokens
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "version": VERSION,
        "accelerator": f"emulated {engine.cfg.profile.gpu}",
        "num_accelerators": 1,
        "loads": [
            {
                "timestamp": time.time(),
                "dp_rank": 0,
                "num_running_reqs": s.num_running,
                "num_waiting_reqs": s.num_waiting,
                "num_waiting_uncached_tokens": s.queued_prefill_tokens,
                "num_used_tokens": s.kv_used_tokens,
                "num_total_tokens": s.kv_used_tokens + cached,
                "num_active_tokens": s.kv_used_tokens,
                "max_total_num_tokens": s.kv_capacity_tokens,
                "max_running_requests": engine.cfg.profile.max_running_requests,
                "token_usage": s.kv_used_tokens / s.kv_capacity_tokens,
                "disaggregation": {"mode": engine.cfg.role.value},
            }
        ],
    }


def load_stat_msg(engine: Engine) -> load_stat.LoadStat:
    s = engine.sched.stats()
    # SGLang 0.5.20+'s 10-field shape; the cumulative prefill counters are not modelled (0, as unknown).
    return load_stat.LoadStat(
        s.num_running, s.num_waiting, s.kv_used_tokens, s.kv_capacity_tokens, 0,
        num_waiting_uncached_tokens=s.queued_prefill_tokens,
        num_total_tokens=s.kv_used_tokens + s.queued_prefill_tokens,
        max_running_requests=0, total_prefill_uncached_tokens=0, total_prefill_busy_us=0,
    )  # fmt: skip


def telemetry_msg(engine: Engine, worker_url: str, seq: int) -> telemetry.WorkerTelemetry:
    s = engine.sched.stats()
    cfg = engine.cfg
    headroom = None
    if cfg.tbt_budget_ms is not None and s.decode_iter_ms is not None:
        headroom = cfg.tbt_budget_ms - s.decode_iter_ms
    local = cfg.role is Role.DECODE
    return telemetry.WorkerTelemetry(
        worker_url=worker_url,
        role=cfg.role.value,
        seq=seq,
        num_running=s.num_running,
        num_waiting=s.num_waiting,
        queued_prefill_tokens=s.queued_prefill_tokens,
        kv_used_tokens=s.kv_used_tokens,
        kv_capacity_tokens=s.kv_capacity_tokens,
        running_context_tokens=s.running_context_tokens,
        num_local_prefills=s.num_local_prefills if local else 0,
        queued_local_prefill_tokens=s.queued_prefill_tokens if local else 0,
        decode_iter_ms=s.decode_iter_ms,
        mixed_iter_ms=s.mixed_iter_ms,
        tbt_headroom_ms=headroom,
        tbt_budget_ms=cfg.tbt_budget_ms if local else None,
        supports_local_prefill=local and cfg.ppd,
    )
