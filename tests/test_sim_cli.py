"""``sglang-ppd sim`` and ``sim compare`` as a user runs them (in-process and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_ppd.sim.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sglang_ppd" / "workload" / "data" / "azure_conv_2023.csv"


def test_run_writes_the_result_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main(["--trace", str(SAMPLE), "--policy", "pd", "--limit", "300", "--rate-scale", "2",
               "--slo-ttft-ms", "500", "--json", str(out)])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("policy", "seed", "num_requests", "wall_s", "slo_attainment", "goodput_rps",
                "kv_bytes_transferred", "routes", "utilization"):  # fmt: skip
        assert key in r
    for group in ("overall", "turn1", "turn2plus"):
        for metric in ("ttft_ms", "tpot_ms"):
            assert set(r[group][metric]) >= {"mean", "p50", "p90", "p95", "p99"}
    assert r["num_requests"] == 300 and r["routes"] == {"pd": 300} and r["slo"]["ttft_ms"] == 500


@pytest.mark.slow
def test_module_entry_point_runs_a_workload_spec(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_ppd.sim", "--workload", "sharegpt:n=20", "--policy", "pd_cache_aware",
         "--seed", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["seed"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workload", "azure:n=5", "--policy", "nope"], "available policies: "),
        (["--trace", "/nonexistent/trace.csv", "--policy", "pd"], "not found"),
        (["--workload", "azure:n=5", "--policy", "pd", "--config", "/nonexistent.yaml"], "not found"),
        (["--workload", "azure:n=5", "--policy", "pd", "--rate-scale", "0"], "rate"),
        (["--workload", "azure:n=5", "--policy", "pd", "--param", "junk"], "key=value"),
    ],
)
def test_bad_input_is_a_one_line_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_config_unknown_key_names_the_allowed_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_prefill: 1\nnum_decodes: 3\n")
    assert main(["--workload", "azure:n=5", "--policy", "pd", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "num_decodes" in err and "num_decode" in err and "publish_period_ms" in err


@pytest.mark.slow
def test_config_is_used(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_prefill: 1\nnum_decode: 3\npublish_period_ms: 20\n")
    out = tmp_path / "r.json"
    assert main(["--workload", "azure:n=50", "--policy", "pd", "--config", str(cfg), "--json", str(out)]) == 0
    assert sorted(json.loads(out.read_text())["utilization"]) == ["d0", "d1", "d2", "p0"]


@pytest.mark.slow
def test_compare_writes_runs_summary_and_plot(tmp_path: Path) -> None:
    rc = main(["compare", "--workload", "azure:n=120", "--policies", "pd,pd_cache_aware",
               "--rate-scales", "1,4", "--seeds", "2", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    assert len(list(tmp_path.glob("pd*_x*_s*.json"))) == 8
    rows = json.loads((tmp_path / "compare.json").read_text())["runs"]
    assert [(r["policy"], r["rate_scale"]) for r in rows] == [
        ("pd", 1), ("pd", 4), ("pd_cache_aware", 1), ("pd_cache_aware", 4)
    ]  # fmt: skip
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_compare_rejects_unknown_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--workload", "azure:n=5", "--policies", "pd,bogus", "--out", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sim-2p2d.yaml", "sim-4p4d-shared-link.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    from sglang_ppd.sim.config import load_sim_config

    cfg = load_sim_config(str(Path(__file__).resolve().parents[1] / "configs" / name))
    assert cfg.num_prefill >= 1 and cfg.num_decode >= 1
