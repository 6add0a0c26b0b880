"""Output a person reads: --version, help that lists the policies and defaults in plain text, errors
that start on their first line, a sim table that names its units, SLO and rate scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_ppd.cli import main as cli_main
from sglang_ppd.core.policy import available_policies
from sglang_ppd.sim.cli import main as sim_main
from sglang_ppd.sim.compare import mean_of
from sglang_ppd.sim.plots import PANELS

WORKLOAD = "sessions:n=4,turns=2,prompt=200,user=20,output=8,think_s=0.1,rate=5"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "sglang-ppd 0.1.0"


@pytest.mark.parametrize("command", ["sim", "router"])
def test_help_lists_every_policy_and_the_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main([command, "--help"])
    out = capsys.readouterr().out
    for name in available_policies():
        assert f"\n  {name}" in out, name
    assert "(default: 2000" in out  # the TTFT SLO
    if command == "router":
        assert "(default: ppd_deflect)" in out and "(default: 30000)" in out


@pytest.mark.parametrize("command", ["sim", "router", "bench", "monitor", "emulate", "launch"])
def test_help_has_no_rst_markup(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main([command, "--help"])
    assert "``" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [["sim", "--workload", WORKLOAD, "--policy", "nope"],
     ["sim", "compare", "--workload", WORKLOAD, "--policies", "nope", "--out", "/nonexistent/x"],
     ["router", "--policy", "nope", "--decode", "http://127.0.0.1:9"]],
)  # fmt: skip
def test_errors_start_on_the_first_line(argv: list[str]) -> None:
    # Piped, as a script or CI log sees it.
    proc = subprocess.run([sys.executable, "-m", "sglang_ppd.cli", *argv], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.startswith(("sglang-ppd sim: error:", "error:")), proc


def test_sim_table_names_units_slo_and_rate_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--workload", WORKLOAD, "--policy", "pd", "--slo-ttft-ms", "700"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for needle in ("TTFT p95 T1 ms", "TPOT p95 ms", "goodput req/s", "rate scale", "TTFT <= 700 ms",
                   "TPOT <= 100 ms", "seed 0"):  # fmt: skip
        assert needle in out, needle


@pytest.mark.slow
def test_compare_with_one_seed_says_so_and_keeps_integers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = sim_main(["compare", "--workload", WORKLOAD, "--policies", "pd", "--seeds", "1", "--seed", "3",
                   "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "seed 3" in out and "mean of" not in out
    text = (tmp_path / "compare.json").read_text()
    row = json.loads(text)["runs"][0]
    assert row["seed"] == 3 and isinstance(row["num_requests"], int)
    assert '"seed": 3,' in text or '"seed": 3\n' in text


def test_mean_of_keeps_agreed_integers() -> None:
    rows = mean_of([{"n": 8, "m": 2, "x": 1.0, "s": "a"}, {"n": 8, "m": 3, "x": 2.0, "s": "b"}])
    assert rows == {"n": 8, "m": 2.5, "x": 1.5, "s": "a"}
    assert type(rows["n"]) is int


def test_compare_plot_has_a_tpot_panel() -> None:
    assert any(path == ("overall", "tpot_ms", "p95") for _, path in PANELS)
