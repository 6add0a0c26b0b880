"""The live benchmark commands run end to end on tiny workloads and write well-formed JSON / PNG.

No timing is asserted: these only check the tools work (real subprocesses and sockets on loopback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_ppd.bench.plot import main as plot_main

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY_SESSIONS = "sessions:n={n},rate={rate},turns=2,think_s=0.1,prompt=uniform:64:256,user=32,output=8"


def run(script: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def is_result(d: dict[str, object]) -> bool:
    return {"policy", "seed", "overall", "turn1", "turn2plus", "machine"} <= d.keys()


@pytest.mark.slow
def test_sim_vs_live_and_plot(tmp_path: Path) -> None:
    run("sim_vs_live.py", "--policies", "pd", "--rates", "4", "--sessions", "2", "--workload", TINY_SESSIONS,
        "--out-dir", str(tmp_path))  # fmt: skip
    out = json.loads((tmp_path / "sim_vs_live.json").read_text())
    assert out["seed"] == 0 and out["machine"]["hostname"]
    (entry,) = out["table"]
    assert entry["num_requests_sim"] == 4 and entry["num_requests_live"] == 4
    assert entry["num_failed_live"] == 0
    assert {(r["group"], r["metric"], r["stat"]) for r in entry["rows"]} >= {("overall", "ttft_ms", "p95")}
    assert all(
        r["live"] is not None and r["sim"] is not None for r in entry["rows"] if r["group"] == "overall"
    )
    runs = sorted((tmp_path / "sim_vs_live").glob("*.json"))
    assert [p.name for p in runs] == ["live_pd_4.json", "sim_pd_4.json"]
    for p in runs:
        data = json.loads(p.read_text())
        assert is_result(data) and data["mode"] in ("sim", "live") and data["load"] == 4
    for x in ("load", "policy"):
        png = tmp_path / f"chart_{x}.png"
        metrics = "turn2plus.ttft_ms.p50,turn2plus.ttft_ms.p95,overall.tpot_ms.p95"
        assert plot_main([*map(str, runs), "--out", str(png), "--x", x, "--metrics", metrics]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_rejects_non_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert plot_main([str(bad), "--out", str(tmp_path / "x.png"), "--x", "policy"]) == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_live_compare_tiny(tmp_path: Path) -> None:
    run("live_compare.py", "--workloads", "azure", "--policies", "pd", "--azure-duration-s", "1",
        "--azure-rate-scale", "1", "--azure-time-scale", "2", "--azure-max-output", "4",
        "--out-dir", str(tmp_path))  # fmt: skip
    wl = json.loads((tmp_path / "live_compare_azure.json").read_text())
    assert wl["workload"] == "azure" and wl["seed"] == 0 and wl["machine"]["hostname"]
    assert wl["time_scale"] == 2 and "| pd | live |" in wl["markdown"]
    modes = {r["mode"]: r for r in wl["rows"]}
    assert modes.keys() == {"sim", "live"}
    assert modes["live"]["num_requests"] == modes["sim"]["num_requests"] == wl["num_requests"] > 0
    assert modes["live"]["num_failed"] == 0
    live = json.loads((tmp_path / "live_compare" / "azure_live_pd.json").read_text())
    assert is_result(live) and live["time_scale"] == 2


@pytest.mark.slow
def test_router_overhead_tiny(tmp_path: Path) -> None:
    out = tmp_path / "ro.json"
    logs = str(tmp_path / "logs")
    run("router_overhead.py", "--latency-requests", "5", "--warmup", "1", "--rates", "20", "--step-s", "0.5",
        "--saturation-s", "0.3", "--saturation-rounds", "1", "--concurrency", "2",
        "--prompt-len", "32", "--rust-python", "", "--out", str(out), "--log-dir", logs)  # fmt: skip
    data = json.loads(out.read_text())
    assert data["seed"] == 0 and data["machine"]["cores"]
    rows = data["rows"]
    assert set(rows) == {"direct (client does the PD hand-off)", "sglang_ppd pd", "sglang_ppd ppd_deflect"}
    for name, row in rows.items():
        assert row["latency_p50_ms"] > 0
        (step,) = row["steps"]
        assert step["offered_rps"] == 20 and step["errors"] == 0
        assert (step["router_cpu_s"] is None) == name.startswith("direct")
        assert row["saturation_rps"] > 0 and len(row["saturation_runs"]) == 1
        assert sum(row["routes"].values()) > 0 or name.startswith("direct")
    assert data["ratios"] == {}  # no Rust router measured
