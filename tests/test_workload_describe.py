"""``python -m sglang_ppd.workload``: a workload's shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sglang_ppd.workload import build_workload
from sglang_ppd.workload.describe import describe, main


def test_describe_fixed_sessions() -> None:
    d = describe(build_workload("sessions:n=4,turns=3,prompt=100,user=20,output=50,system=10", seed=0))
    assert (d["num_requests"], d["num_sessions"], d["num_multi_turn_sessions"], d["max_turns"]) == (
        12,
        4,
        4,
        3,
    )
    assert d["turn2plus_fraction"] == pytest.approx(8 / 12) and d["closed_loop_turns"] == 8
    assert d["turn2plus_new_len"]["p50"] == 20 and d["shared_prefix_len"] == 10
    # history / input on turns 2 and 3: 160/180 and 230/250
    assert d["turn2plus_history_fraction"] == pytest.approx((160 + 230) / (180 + 250))


def test_describe_open_loop_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    d = describe(build_workload("azure:n=1000"))
    assert d["turn2plus_fraction"] == 0.0 and d["turn2plus_new_len"] is None
    assert 3 < d["open_loop_rate_per_s"] < 10 and d["open_loop_gap_cv"] > 0.5
    assert main(["--workload", "mooncake:n=300"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_requests"] == 300 and out["turn2plus_fraction"] > 0.05
    assert main(["--workload", "bogus:"]) == 2


def test_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_ppd.workload", "--workload", "sharegpt:n=5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_sessions"] == 5
