"""The monitor's pure render function on a hand-made /stats snapshot."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from sglang_ppd.monitor.render import render


def snapshot() -> dict[str, Any]:
    worker = {"healthy": True, "num_inflight": 3, "queued_prefill_tokens": 512, "kv_capacity_tokens": 1000,
              "num_local_prefills": 0, "telemetry_source": "ppd", "prefix_index": "exact",
              "indexed_blocks": 77, "kv_events": 10, "kv_event_gaps": 0, "dropped_messages": 0}
    return {
        "uptime_s": 12.0, "policy": "ppd_deflect", "model": "emulated/h100-llama31-8b",
        "slo": {"ttft_ms": 2000.0, "tpot_ms": 100.0, "max_telemetry_age_ms": 1000.0},
        "requests": {"inflight": 4, "queued": 0, "total": 1234, "errors": 2, "retries": 1, "rejected": 0},
        "workers": [
            {**worker, "url": "http://127.0.0.1:31000", "role": "prefill", "supports_local_prefill": False,
             "num_running": 1, "num_waiting": 5, "kv_used_tokens": 950, "kv_usage": 0.95,
             "decode_iter_ms": None, "mixed_iter_ms": None, "telemetry_age_ms": 12.0},
            {**worker, "url": "http://127.0.0.1:31004", "role": "decode", "supports_local_prefill": True,
             "num_running": 40, "num_waiting": 0, "kv_used_tokens": 300, "kv_usage": 0.3,
             "decode_iter_ms": 7.25, "mixed_iter_ms": 21.5, "telemetry_age_ms": 5000.0,
             "prefix_index": "approx", "prefill_cost_factor": 0.53, "correction_samples": 41},
        ],
        "routes": {"pd": 600, "local": 500, "deflect": 134},
        "top_reasons": [{"route": "local", "reason": "history_resident", "count": 500},
                        {"route": "pd", "reason": "turn1", "count": 600}],
        "latency": {"turn1": {"count": 600, "ttft_p50_ms": 180.5, "ttft_p95_ms": 2500.0,
                              "tpot_p50_ms": 9.5, "tpot_p95_ms": 14.0},
                    "turn2+": {"count": 634, "ttft_p50_ms": 45.25, "ttft_p95_ms": 90.0,
                               "tpot_p50_ms": 10.0, "tpot_p95_ms": 15.5}},
        "kv_bytes": {"transferred": 3_000_000_000, "avoided": 1_500_000_000},
        "slo_attainment": {"count": 1234, "ttft": 0.97, "tpot": 0.995, "both": 0.9625},
        "decision_ms": {"count": 1234, "p50": 0.05, "p99": 0.4},
    }


def text_of(renderable: Any, width: int = 170) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_shows_every_section() -> None:
    out = text_of(render(snapshot(), "http://127.0.0.1:30000"))
    for needle in ("P0 :31000", "D0 :31004", "decode+ppd", "7.2 / 21.5", "5,000 ms", "telemetry: age",
                   "approx 77", "ppd_deflect", "total 1,234", "errors 2",
                   "PD (P->D)", "local append", "deflected", "history_resident",
                   "Turn 1", "Turn 2+", "180.5", "2,500.0", "45.2", "15.5",
                   "3.00 GB", "1.50 GB", "97.0%", "99.5%", "96.2%", "0.1 / 0.4 ms", "0.53 n41"):
        assert needle in out, needle
    # 600 / 1234 of the routes went PD.
    assert "49%" in out


def test_render_is_pure() -> None:
    s = snapshot()
    assert text_of(render(s, "u")) == text_of(render(s, "u"))


def test_render_without_stats_shows_the_error() -> None:
    out = text_of(render(None, "http://x:1", "cannot read http://x:1/stats: refused"))
    assert "cannot read http://x:1/stats: refused" in out and "Turn 2+" in out


def test_workers_are_told_apart_by_short_names() -> None:
    s = snapshot()
    other = {**s["workers"][1], "url": "http://10.0.0.2:31004"}
    s["workers"].append(other)
    out = text_of(render(s, "u", width=120))
    # Two hosts: the host is part of the name; the roles count up.
    for needle in ("P0 127.0.0.1:31000", "D0 127.0.0.1:31004", "D1 10.0.0.2:31004"):
        assert needle in out, needle


@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (120, 40)])
def test_fits_the_terminal(width: int, height: int) -> None:
    """Every line within the width, the whole frame within the height (rich would crop the rest), and
    what an operator looks at first still there: every worker's load, routes, SLO."""
    out = text_of(render(snapshot(), "http://127.0.0.1:30000", width=width), width=width)
    lines = out.rstrip("\n").split("\n")
    assert max(len(line.rstrip()) for line in lines) <= width
    assert len(lines) <= height, out
    for needle in ("P0 :31000", "D0 :31004", "run", "wait", "95%", "history_resident", "96.2%", "Turn 2+"):
        assert needle in out, (needle, out)
    # No cell cut to an ellipsis: a column is either shown whole or dropped.
    assert "…" not in out, out


def test_columns_are_dropped_by_priority() -> None:
    narrow = text_of(render(snapshot(), "u", width=80), width=80)
    wide = text_of(render(snapshot(), "u", width=170), width=170)
    assert "prefix index" in wide and "prefix index" not in narrow
    assert "KV usage" in narrow  # kept longest after run/wait
