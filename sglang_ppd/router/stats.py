"""The ``/stats`` JSON snapshot the live monitor renders. Schema (all times in ms, ``null`` = unknown)::

    {
      "uptime_s": float, "policy": str, "model": str,
      "slo": {"ttft_ms": float, "tpot_ms": float, "max_telemetry_age_ms": float},
      "requests": {"inflight": int, "queued": int, "total": int, "errors": int, "retries": int,
                   "num_client_aborts": int, "rejected": int},
      (errors: replies >= 500; a client that disconnects is counted in num_client_aborts, not errors)
      "workers": [{"url": str, "role": "prefill"|"decode", "healthy": bool,
                   "supports_local_prefill": bool, "num_inflight": int, "num_local_inflight": int,
                   "num_running": int|null, "num_waiting": int|null,
                   "queued_prefill_tokens": int|null, "kv_used_tokens": int|null,
                   "kv_capacity_tokens": int|null, "kv_usage": float|null (0..1),
                   "decode_iter_ms": float|null, "mixed_iter_ms": float|null,
                   "num_local_prefills": int|null,
                   "telemetry_age_ms": float|null, "telemetry_source": "ppd"|"loadstat"|"v1/loads"|null,
                   "prefix_index": "exact"|"approx"|null, "indexed_blocks": int,
                   "kv_events": int, "kv_event_gaps": int, "dropped_messages": int,
                   "dropped_by_reason": {"<feed>:<reason>": int}, "rejected_fields": int,
                   "prefill_cost_factor": float, "correction_samples": int}],
      (rejected_fields: published load fields out of range or non-finite, dropped by core.observe;
       prefill_cost_factor: measured/predicted prefill time there as the policy sees it,
       core.correction, 1.0 unless self_correct; correction_samples: the worker's own TTFTs)
      "routes": {"pd": int, "local": int, "deflect": int},
      "top_reasons": [{"route": str, "reason": str, "count": int}],      # at most 8, most first
      "latency": {"turn1": L, "turn2+": L},
          # L = {"count": int, "ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "tpot_p95_ms": float|null}
          # over the last 2048 streamed requests of that class
      "kv_bytes": {"transferred": int, "avoided": int},
      "slo_attainment": {"count": int, "ttft": float|null, "tpot": float|null, "both": float|null},
      "decision_ms": {"count": int, "p50": float|null, "p99": float|null},   # snapshot + policy
      "prefix_lookup_ms": {"count": int, "p50": float|null, "p99": float|null}, # page hashes + lookups
      "prefix_table_blocks": int,  # unique blocks in this process's shared block tables (KV mirror)
      "sessions": {"num_sessions": int, "max_sessions": int, "num_evicted": int}  # this process's
    }

A request is "turn 2+" when its ``x-ppd-turn`` header is >= 2, or (without that header) when its
``x-ppd-session-id`` was seen before. TTFT/TPOT are measured on streamed requests only.
"""

from __future__ import annotations

import time
from typing import Any

from sglang_ppd.router.metrics import Histogram, RouterMetrics
from sglang_ppd.router.service import Router


def _ms(h: Histogram, q: float) -> float | None:
    v = h.quantile(q)
    return None if v is None else v * 1000.0


def _frac(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def worker_rows(router: Router) -> list[tuple[str, str, float | None, int, int]]:
    now = time.monotonic()
    rows = []
    for w in router.registry.all():
        index = w.exact_index or w.approx_index
        rows.append((w.name, w.role.value, w.age_ms(now), w.num_inflight, index.num_blocks() if index else 0))
    return rows


def build_stats(router: Router, metrics: RouterMetrics | None = None) -> dict[str, Any]:
    """``metrics``: counters to report instead of the router's own (a process group's sum)."""
    m = metrics or router.metrics
    now = time.monotonic()
    workers = []
    for w in router.registry.all():
        s = w.snapshot(now)
        used, cap = s.kv_used_tokens, s.kv_capacity_tokens
        index = w.exact_index or w.approx_index
        workers.append(
            {
                "url": w.name,
                "role": w.role.value,
                "healthy": w.healthy,
                "supports_local_prefill": w.supports_local_prefill,
                "num_inflight": w.num_inflight,
                "num_local_inflight": w.num_local_inflight,
                "num_running": s.num_running,
                "num_waiting": s.num_waiting,
                "queued_prefill_tokens": s.queued_prefill_tokens,
                "kv_used_tokens": used,
                "kv_capacity_tokens": cap,
                "kv_usage": used / cap if used is not None and cap else None,
                "decode_iter_ms": s.decode_iter_ms,
                "mixed_iter_ms": s.mixed_iter_ms,
                "num_local_prefills": s.num_local_prefills,
                "telemetry_age_ms": s.age_ms,
                "telemetry_source": w.telemetry_source,
                "prefix_index": "exact" if w.exact_index else "approx" if w.approx_index else None,
                "indexed_blocks": index.num_blocks() if index else 0,
                "kv_events": w.num_kv_events,
                "kv_event_gaps": w.num_kv_gaps,
                "dropped_messages": w.num_dropped_messages,
                "dropped_by_reason": dict(w.dropped),
                "rejected_fields": w.num_rejected_fields,
                "prefill_cost_factor": s.prefill_cost_factor,
                "correction_samples": w.residual.num_samples,
            }
        )
    routes = {"pd": 0, "local": 0, "deflect": 0}
    for (route, _), n in m.route_decisions.items():
        if route != "none":  # a failed decision (reason policy_error) routed nothing
            routes[route] = routes.get(route, 0) + n
    top = sorted(m.route_decisions.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    total = sum(m.requests.values())
    errors = sum(n for (_, status), n in m.requests.items() if status >= 500)
    return {
        "uptime_s": now - router.started_s,
        "policy": router.policy_name,
        "model": router.model_name,
        "slo": {
            "ttft_ms": router.slo.ttft_ms,
            "tpot_ms": router.slo.tpot_ms,
            "max_telemetry_age_ms": router.slo.max_telemetry_age_ms,
        },
        "requests": {
            "inflight": router.num_inflight,
            "queued": router.num_queued,
            "total": total,
            "errors": errors,
            "retries": m.retries,
            "num_client_aborts": m.client_aborts,
            "rejected": sum(m.rejected.values()),
        },
        "workers": workers,
        "routes": routes,
        "top_reasons": [{"route": r, "reason": why, "count": n} for (r, why), n in top],
        "latency": {
            ("turn1" if k == "1" else "turn2+"): {
                "count": m.ttft[k].count,
                "ttft_p50_ms": _ms(m.ttft[k], 0.5),
                "ttft_p95_ms": _ms(m.ttft[k], 0.95),
                "tpot_p50_ms": _ms(m.tpot[k], 0.5),
                "tpot_p95_ms": _ms(m.tpot[k], 0.95),
            }
            for k in ("1", "2+")
        },
        "kv_bytes": {"transferred": m.kv_bytes_transferred, "avoided": m.kv_bytes_avoided},
        "slo_attainment": {
            "count": m.slo_total,
            "ttft": _frac(m.slo_ttft_ok, m.slo_total),
            "tpot": _frac(m.slo_tpot_ok, m.slo_tpot_total),
            "both": _frac(m.slo_both_ok, m.slo_total),
        },
        "decision_ms": {"count": m.decision.count, "p50": _ms(m.decision, 0.5), "p99": _ms(m.decision, 0.99)},
        "prefix_lookup_ms": {
            "count": m.prefix_lookup.count,
            "p50": _ms(m.prefix_lookup, 0.5),
            "p99": _ms(m.prefix_lookup, 0.99),
        },
        "prefix_table_blocks": router.prefix.num_table_blocks(),
        "sessions": router.sessions.stats(),
    }
