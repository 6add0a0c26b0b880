"""Synthetic sessions and ``--workload`` spec strings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ppd.workload import build_workload
from sglang_ppd.workload.arrivals import arrival_times_s
from sglang_ppd.workload.dists import parse_dist
from sglang_ppd.workload.grammar import parse_spec


@pytest.mark.slow
def test_seeded_determinism() -> None:
    spec = "sessions:n=50,rate=2,cv=2.0,turns=geometric:3,think_s=exp:5"
    assert build_workload(spec, seed=7) == build_workload(spec, seed=7)
    assert build_workload(spec, seed=7) != build_workload(spec, seed=8)
    assert build_workload("sharegpt:n=30", seed=2) == build_workload("sharegpt:n=30", seed=2)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_arrival_cv(cv: float) -> None:
    t = arrival_times_s(np.random.default_rng(0), 20000, rate_per_s=4.0, cv=cv)
    gaps = np.diff(t)
    assert t[0] == 0.0
    assert gaps.mean() == pytest.approx(0.25, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


def test_fixed_sessions_shape() -> None:
    w = build_workload("sessions:n=10,turns=3,prompt=100,user=20,output=50,think_s=2,system=64", seed=0)
    assert len(w) == 30
    for s in range(10):
        t1, t2, t3 = (t for t in w if t.session_id == f"s{s}")
        assert (t1.input_len, t1.history_len, t1.shared_prefix_len) == (164, 0, 64)
        assert (t2.input_len, t2.history_len, t2.think_time_s, t2.arrival_s) == (234, 214, 2.0, None)
        assert (t3.input_len, t3.history_len) == (304, 284)


def test_rate_scale_scales_session_arrivals() -> None:
    base = build_workload("sessions:n=40,rate=1,turns=1,prompt=10,output=10", seed=3)
    fast = build_workload("sessions:n=40,rate=1,turns=1,prompt=10,output=10", seed=3, rate_scale=4.0)
    assert [t.arrival_s for t in fast] == pytest.approx([(t.arrival_s or 0) / 4 for t in base])


def test_sharegpt_spec_and_limit() -> None:
    w = build_workload("sharegpt:n=20,rate=1.5", seed=0)
    assert len({t.session_id for t in w}) == 20
    assert sum(t.turn > 1 for t in w) > 0
    assert len(build_workload("sharegpt:n=20", seed=0, limit=7)) == 7
    # More sessions than the table holds: repeats get unique ids.
    big = build_workload("sharegpt:n=1600,max_context=8192", seed=0, limit=None)
    assert len({t.request_id for t in big}) == len(big)


def test_azure_and_mooncake_specs() -> None:
    window = build_workload("azure:start_s=600,duration_s=60", seed=0)
    assert 0 < len(window) < 1000
    assert all(0 <= (t.arrival_s or 0) < 60 for t in window)
    assert len(build_workload("azure:n=10")) == 10
    mc = build_workload("mooncake:n=200", seed=1)
    assert len(mc) == 200 and any(t.turn > 1 for t in mc)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("poisson:rate=1", "unknown kind"),
        ("sessions:rate=0", "rate=0"),
        ("sessions:bogus=1", "unknown key 'bogus'"),
        ("sessions:n", "not key=value"),
        ("sessions:turns=zipf:2", "unknown distribution"),
        ("sessions:turns=uniform:5:1", "A <= B"),
        ("sessions:think_s=exp:1:2", "takes 1 parameter"),
        ("sessions:n=2,n=3", "given twice"),
        ("sessions:think_s=sharegpt", "no ShareGPT distribution"),
        ("sessions:prompt=200000,n=3", "yields no requests"),
        ("azure:n=1.5", "integer >= 1"),
        ("sessions:system=-1", "integer >= 0"),
    ],
)
def test_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_workload(spec, seed=0)


def test_defaults_and_dists() -> None:
    kind, p = parse_spec("sessions:")
    assert kind == "sessions" and p["n"] == 100 and p["system"] == 0
    draws = parse_dist("lognormal:100:0.5", "x").sample(np.random.default_rng(0), 20000)
    assert np.median(draws) == pytest.approx(100, rel=0.03)
    d = parse_dist("uniform:3:5", "x")
    assert set(d.sample_tokens(np.random.default_rng(0), 1000).tolist()) == {3, 4, 5}


def test_file_key_reads_your_own_trace(tmp_path: Path) -> None:
    data = Path(str(resources.files("sglang_ppd.workload") / "data"))
    mine = tmp_path / "mine.jsonl"
    sample = data / "mooncake_conversation_first30min.jsonl"
    mine.write_text("\n".join(sample.read_text().splitlines()[:40]))
    assert len(build_workload(f"mooncake:file={mine}")) == 40
    table = tmp_path / "table.csv"
    table.write_text("conv_idx,turn,user_tokens,assistant_tokens,system_tokens\n7,1,10,20,0\n7,2,5,30,0\n")
    w = build_workload(f"sharegpt:file={table},n=1", seed=0)
    assert [(t.session_id, t.input_len, t.history_len) for t in w] == [("sg7", 10, 0), ("sg7", 35, 30)]
    azure_file = data / "azure_conv_2023.csv"
    assert build_workload(f"azure:file={azure_file},n=3") == build_workload("azure:n=3")
    with pytest.raises(ValueError, match="no such file"):
        build_workload(f"azure:file={tmp_path / 'nope.csv'}")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 8),
    turns=st.sampled_from(["1", "3", "geometric:3", "uniform:1:6", "sharegpt"]),
    prompt=st.sampled_from(["1", "700", "exp:300", "lognormal:200:1.5", "sharegpt"]),
    output=st.sampled_from(["1", "64", "uniform:1:900", "sharegpt"]),
    system=st.integers(0, 600),
    max_context=st.integers(1500, 20000),
    cv=st.sampled_from(["0.5", "1", "4"]),
)
def test_any_sessions_spec_gives_valid_chains(
    seed: int, n: int, turns: str, prompt: str, output: str, system: int, max_context: int, cv: str
) -> None:
    spec = f"sessions:n={n},turns={turns},prompt={prompt},output={output},system={system}"
    spec += f",max_context={max_context},cv={cv},rate=3"
    try:
        w = build_workload(spec, seed=seed)
    except ValueError as exc:
        assert "yields no requests" in str(exc)
        return
    prev = None
    for t in w:
        assert t.input_len + t.output_len <= max_context and t.shared_prefix_len == system
        if prev is not None and prev.session_id == t.session_id:
            assert t.turn == prev.turn + 1 and t.history_len == prev.input_len + prev.output_len
            assert t.arrival_s is None and t.think_time_s >= 0
        else:
            assert t.turn == 1 and t.history_len == 0 and t.arrival_s is not None and t.arrival_s >= 0
            assert t.input_len > system
        prev = t


def test_agentic_sessions() -> None:
    """Tool loops: every session opens with the shared tool-schema prompt; later turns append one
    tool output in [100, 8000] tokens after a sub-second pause; tens of turns; contexts past 32k."""
    w = build_workload("agentic:n=60", seed=4)
    assert w == build_workload("agentic:n=60", seed=4)
    assert w != build_workload("agentic:n=60", seed=5)
    by_session: dict[str, list[object]] = {}
    for t in w:
        by_session.setdefault(t.session_id, []).append(t)
        assert t.shared_prefix_len == 12000
        if t.turn == 1:
            assert t.history_len == 0 and t.input_len > 12000
        else:
            assert 100 <= t.input_len - t.history_len <= 8000
            assert t.think_time_s is not None and 0.0 <= t.think_time_s < 1.0
    turns = sorted(len(v) for v in by_session.values())
    assert len(turns) == 60 and 10 <= turns[len(turns) // 2] <= 40
    assert max(t.input_len for t in w) > 32_000
    assert all(t.input_len + t.output_len <= 131072 for t in w)


def test_agentic_keys() -> None:
    w = build_workload("agentic:n=5,turns=3,tool_output=50000,tool_min=200,tool_max=300,system=0", seed=0)
    assert {t.input_len - t.history_len for t in w if t.turn > 1} == {300}
    assert all(t.shared_prefix_len == 0 for t in w) and len(w) == 15
    with pytest.raises(ValueError, match="tool_min"):
        build_workload("agentic:tool_min=900,tool_max=100", seed=0)
