"""The policies' estimates against the simulator that runs them (same cost model), and a smoke run."""

from __future__ import annotations

import pytest
from sglang_ppd_policies.estimate import Estimator
from sglang_ppd_policies.view import View
from test_policies_fixtures import PROFILE, SLO

from sglang_ppd.core.types import ClusterSnapshot, LinkSnapshot, RequestFeatures, Role, WorkerSnapshot
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload import load_workload
from sglang_ppd.workload.spec import TurnSpec

ALL = ["pd", "pd_cache_aware", "always_local", "threshold", "ppd", "deflect", "ppd_deflect"]

# One session: a 4,000-token first turn, then a second turn whose first 4,050 tokens (turn 1's
# prompt and output) are resident on the D worker that decoded turn 1.
SESSION = (
    TurnSpec("s", 1, 4000, 50, 0, 0.0),
    TurnSpec("s", 2, 4400, 50, 4050, None, think_time_s=1.0),
)


def idle_view(prompt_len: int) -> View:
    p = WorkerSnapshot("p0", Role.PREFILL, 0.0, queued_prefill_tokens=0, num_running=0, num_waiting=0)
    d = WorkerSnapshot("d0", Role.DECODE, 0.0, num_running=0, num_waiting=0)
    snap = ClusterSnapshot((p, d), LinkSnapshot(50e9, 0, 0.0))
    return View(RequestFeatures("r", prompt_len, 50), snap, SLO)


def ttft_ms(policy: str, turn: int) -> tuple[str, float]:
    _, out = simulate(SESSION, policy)
    (rec,) = [r for r in out.records if r.turn == turn]
    assert rec.route is not None and rec.first_token_s is not None
    return rec.route, 1000.0 * (rec.first_token_s - rec.arrival_s)


def test_pd_ttft_estimate_matches_the_simulator_on_an_idle_cluster() -> None:
    v = idle_view(4000)
    est = Estimator(PROFILE).pd_ttft_ms(v, v.ps[0], v.ds[0])
    route, sim = ttft_ms("pd", 1)
    assert route == "pd"
    assert est == pytest.approx(sim, rel=0.01)


def test_local_append_estimate_matches_the_simulator() -> None:
    # Turn 2 appends 350 tokens over 4,050 resident ones on an otherwise idle D worker.
    est = Estimator(PROFILE).chunked_ms(350, 4050, PROFILE.chunked_prefill_size, 0.0)
    route, sim = ttft_ms("ppd", 2)
    assert route == "local"
    assert est == pytest.approx(sim, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_policy_runs_a_small_session_workload(name: str) -> None:
    workload = load_workload(spec="sharegpt:n=20,rate=1", rate_scale=4)
    result, _ = simulate(workload, name)
    assert result["num_failed"] == 0
    assert sum(result["routes"].values()) == result["num_requests"] == len(workload)
    if name in ("always_local", "ppd", "ppd_deflect"):
        assert result["routes"].get("local", 0) > 0
