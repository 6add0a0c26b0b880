"""The evaluation grid's report (benchmarks/sim_grid_report.py): regret, the oracle and the default
policy's done-when checks on hand-made runs, each check flipping on the number it reads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sim_grid_report import GridSpec, build_report, splice_markdown  # noqa: E402

SPEC = GridSpec(
    split="eval",
    default_policy="ppd_deflect",
    policies=("pd", "pd_cache_aware", "ppd_deflect"),
    thresholds=(256, 1024),
    slo_profiles={"tight": (500.0, 25.0)},
    load_factors={"below": 0.5, "at": 1.0},
    knees={"w": 2.0},
    specs={"w": "sessions:"},
    seeds=(1, 2),
)


def run(
    label: str, load_name: str, seed: int, good: float, tpot: float = 20.0, t2: float = 100.0
) -> dict[str, Any]:
    stats = {"p95": tpot}
    return {
        "workload": "w", "load_name": load_name, "slo_profile": "tight", "label": label, "seed": seed,
        "num_requests": 1000, "slo_attainment": good / 1000,
        "overall": {"ttft_ms": {"p95": 300.0}, "tpot_ms": stats},
        "turn2plus": {"ttft_ms": {"mean": t2}},
    }  # fmt: skip


def grid(**override: tuple[float, float, float]) -> list[dict[str, Any]]:
    """Every label scores (good, tpot, turn2+ ttft) = (900, 20, 100) in both cells unless overridden
    as ``label_loadname=(good, tpot, t2)``; seed 2 scores 20 fewer good requests than seed 1."""
    out = []
    for load_name in SPEC.load_factors:
        for label in SPEC.labels:
            good, tpot, t2 = override.get(f"{label}_{load_name}", (900.0, 20.0, 100.0))
            out += [
                run(label, load_name, 1, good + 10, tpot, t2),
                run(label, load_name, 2, good - 10, tpot, t2),
            ]
    return out


def checks(report: dict[str, Any]) -> list[bool]:
    return [c["passed"] for c in report["checks"]]


def test_regret_and_oracle() -> None:
    report = build_report(grid(threshold_T1024_at=(1000.0, 20.0, 100.0), pd_at=(500.0, 20.0, 100.0)), SPEC)
    cell = report["table"]["w/at/tight"]
    assert cell["best"] == "threshold_T1024" and cell["oracle_threshold"] == "threshold_T1024"
    assert cell["regret"]["pd"] == pytest.approx(0.5)
    assert cell["regret"]["ppd_deflect"] == pytest.approx(0.1)
    assert cell["regret"]["threshold_oracle"] == 0.0
    assert cell["rows"]["pd"]["good"] == pytest.approx(500.0)  # seed mean
    assert report["worst_case_regret"]["pd"] == pytest.approx(0.5)
    assert checks(report) == [False, True, True]
    assert "0.100 at w/at/tight" in report["check_lines"][0]


def test_all_checks_pass_on_a_tie() -> None:
    report = build_report(grid(), SPEC)
    assert checks(report) == [True, True, True]
    assert all(line.startswith("PASS") for line in report["check_lines"])


def test_regret_bar_is_inclusive() -> None:
    assert checks(build_report(grid(ppd_deflect_at=(873.0, 20.0, 100.0)), SPEC))[0]  # 0.03
    assert not checks(build_report(grid(ppd_deflect_at=(872.0, 20.0, 100.0)), SPEC))[0]


def test_tpot_check_only_where_pd_holds_the_slo() -> None:
    broken = build_report(grid(ppd_deflect_below=(900.0, 26.0, 100.0)), SPEC)
    assert checks(broken) == [True, False, True]
    assert "w/below/tight" in broken["check_lines"][1]
    both = grid(ppd_deflect_below=(900.0, 26.0, 100.0), pd_below=(900.0, 30.0, 100.0))
    assert checks(build_report(both, SPEC)) == [True, True, True]


def test_turn2plus_ttft_check_below_the_knee_only() -> None:
    assert checks(build_report(grid(ppd_deflect_below=(900.0, 20.0, 104.0)), SPEC))[2]
    slow = build_report(grid(ppd_deflect_below=(900.0, 20.0, 106.0)), SPEC)
    assert not checks(slow)[2] and "+6 %" in slow["check_lines"][2]
    assert checks(build_report(grid(ppd_deflect_at=(900.0, 20.0, 200.0)), SPEC))[2]


def test_splice_markdown_replaces_only_its_split() -> None:
    dev = "<!-- grid:dev -->\nold dev\n<!-- /grid:dev -->"
    doc = f"head\n{dev}\n<!-- grid:eval -->\nold\n<!-- /grid:eval -->\ntail"
    out = splice_markdown(doc, "eval", "new")
    assert "old dev" in out and "\nold\n" not in out and "<!-- grid:eval -->\nnew\n<!-- /grid:eval -->" in out
    assert out.startswith("head") and out.endswith("tail")
    with pytest.raises(ValueError, match="markers"):
        splice_markdown("no markers", "eval", "x")
