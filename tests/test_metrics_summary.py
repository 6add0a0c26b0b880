"""The result JSON on hand-made records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sglang_ppd.core.types import Slo
from sglang_ppd.metrics import RequestRecord, machine_info, stats, summarize, write_result_json

SLO = Slo(ttft_ms=100.0, tpot_ms=10.0)


def rec(
    i: int, turn: int, ttft_s: float | None, e2e_s: float | None, out: int, **kw: object
) -> RequestRecord:
    arrival = float(i)
    return RequestRecord(
        request_id=f"s{i}#{turn}",
        session_id=f"s{i}",
        turn=turn,
        input_len=100,
        output_len=out,
        arrival_s=arrival,
        first_token_s=None if ttft_s is None else arrival + ttft_s,
        finish_s=None if e2e_s is None else arrival + e2e_s,
        **kw,  # type: ignore[arg-type]
    )


def test_tpot_formula() -> None:
    r = rec(0, 1, 0.050, 0.250, 21, route="pd")
    assert r.ttft_ms == pytest.approx(50.0)
    assert r.tpot_ms == pytest.approx(200.0 / 20)
    assert rec(0, 1, 0.05, 0.05, 1, route="pd").tpot_ms is None


def test_stats_linear_percentiles() -> None:
    s = stats([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["p50"] == 2.5 and s["count"] == 4
    assert s["p90"] == pytest.approx(3.7)
    empty = stats([])
    assert empty["p99"] is None and empty["count"] == 0


def test_summary_attainment_goodput_and_splits() -> None:
    records = [
        # meets both: TTFT 50 ms, TPOT (250-50)/20 = 10 ms
        rec(0, 1, 0.050, 0.250, 21, route="pd", reason="p-idle", kv_bytes_transferred=1000),
        # misses TPOT: (450-50)/20 = 20 ms
        rec(1, 2, 0.050, 0.450, 21, route="local", reason="append", kv_bytes_avoided=700, itl_ms=(5.0, 7.0)),
        # misses TTFT
        rec(2, 2, 0.200, 0.300, 11, route="local", reason="append", itl_ms=(9.0,)),
        # one output token: TPOT undefined, counts as met
        rec(3, 1, 0.020, 0.020, 1, route="deflect", reason="p-busy"),
        # failed: a miss, excluded from latency statistics
        rec(9, 2, None, None, 5, route=None, error="timeout"),
    ]
    s = summarize(records, slo=SLO, wall_s=1.5, policy="ppd", seed=4, machine="here")
    assert s["num_requests"] == 5 and s["num_failed"] == 1
    assert s["slo_attainment"] == pytest.approx(2 / 5)
    # from the first arrival (0) to the last finish/arrival (9)
    assert s["duration_s"] == pytest.approx(9.0)
    assert s["goodput_rps"] == pytest.approx(2 / 9.0)
    assert s["routes"] == {"deflect": 1, "local": 2, "pd": 1, "unknown": 1}
    assert s["reasons"] == {"append": 2, "p-busy": 1, "p-idle": 1, "unknown": 1}
    assert s["kv_bytes_transferred"] == 1000 and s["kv_bytes_avoided"] == 700
    assert s["turn1"]["count"] == 2 and s["turn2plus"]["count"] == 3
    assert s["turn2plus"]["ttft_ms"]["count"] == 2
    assert s["turn2plus"]["slo_attainment"] == 0.0
    assert s["overall"]["itl_ms"]["count"] == 3 and s["overall"]["itl_ms"]["mean"] == pytest.approx(7.0)
    # TPOTs 10, 20 and (300-200)/10 = 10
    assert s["overall"]["tpot_ms"]["p50"] == pytest.approx(10.0)
    assert s["overall"]["tpot_ms"]["mean"] == pytest.approx(40 / 3)
    assert s["by_route"]["local"]["ttft_ms"]["mean"] == pytest.approx(125.0)
    assert s["machine"] == "here" and s["policy"] == "ppd" and s["seed"] == 4
    for group in ("overall", "turn1", "turn2plus"):
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert set(s[group][metric]) == {"mean", "p50", "p90", "p95", "p99", "count"}


def test_explicit_duration_and_key_clash() -> None:
    records = [rec(0, 1, 0.01, 0.02, 2, route="pd")]
    assert summarize(records, slo=SLO, wall_s=0, policy="pd", seed=0, duration_s=4.0)["goodput_rps"] == 0.25
    with pytest.raises(ValueError, match="overwrite"):
        summarize(records, slo=SLO, wall_s=0, policy="pd", seed=0, routes={})
    empty = summarize([], slo=SLO, wall_s=0, policy="pd", seed=0)
    assert empty["slo_attainment"] is None and empty["goodput_rps"] == 0.0


def test_write_result_json(tmp_path: Path) -> None:
    s = summarize([rec(0, 1, 0.01, 0.02, 2, route="pd")], slo=SLO, wall_s=0.1, policy="pd", seed=1)
    s["weird"] = float("nan")
    path = write_result_json(tmp_path / "sub" / "r.json", s)
    data = json.loads(path.read_text())
    assert data["weird"] is None and data["seed"] == 1
    assert data["machine"]["hostname"] == machine_info()["hostname"]
    assert data["date"].endswith("Z")
