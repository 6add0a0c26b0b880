"""What a plugin author sees when their policy is wrong: one line that says what, and a non-zero exit."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from sglang_ppd.core import policy as policy_mod
from sglang_ppd.core.policy import ENTRY_POINT_GROUP, Policy
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo
from sglang_ppd.sim import compare as compare_mod
from sglang_ppd.sim.cli import main

WORKLOAD = "sessions:n=4,turns=2,prompt=200,user=20,output=8,think_s=0.1,rate=5"


class UnknownDecodePolicy(Policy):
    """Sends everything to a decode worker the cluster does not have (a typo in a worker id)."""

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        p = snap.prefill[0].worker_id
        return Route(RouteKind.PD, decode_worker="d9", prefill_worker=p, reason="typo")


class SometimesUnknownPolicy(Policy):
    """Wrong for Turn 2+ only: the run goes on, but the user must hear about it."""

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        d = "d9" if req.turn != 1 else snap.decode[0].worker_id
        return Route(RouteKind.PD, decode_worker=d, prefill_worker=snap.prefill[0].worker_id, reason="x")


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three extra installed policies, as entry points of a distribution would declare them."""
    extra = {
        "unknown_decode": f"{__name__}:UnknownDecodePolicy",
        "sometimes_unknown": f"{__name__}:SometimesUnknownPolicy",
        "missing_module": "sglang_ppd_no_such_plugin.policy:Mine",
    }
    real = policy_mod.available_policies()

    def available() -> dict[str, Any]:
        return real | {k: EntryPoint(name=k, value=v, group=ENTRY_POINT_GROUP) for k, v in extra.items()}

    monkeypatch.setattr(policy_mod, "available_policies", available)
    monkeypatch.setattr(compare_mod, "available_policies", available)


def test_a_route_to_an_unknown_worker_is_named_and_fails_the_run(
    plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--workload", WORKLOAD, "--policy", "unknown_decode"]) == 1
    err = capsys.readouterr().err
    assert "8 of 8 requests failed" in err
    assert "'d9', not a decode worker" in err


def test_some_bad_routes_are_reported_but_the_run_succeeds(
    plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--workload", WORKLOAD, "--policy", "sometimes_unknown"]) == 0
    err = capsys.readouterr().err
    assert "4 of 8 requests failed" in err and "'d9', not a decode worker" in err


@pytest.mark.slow
def test_compare_fails_when_a_policy_routes_nowhere(
    plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["compare", "--workload", WORKLOAD, "--policies", "pd,unknown_decode", "--seeds", "1",
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 1
    assert "unknown_decode" in capsys.readouterr().err


def test_an_entry_point_whose_module_is_missing_is_one_line(
    plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--workload", WORKLOAD, "--policy", "missing_module"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "missing_module" in err and "sglang_ppd_no_such_plugin" in err
