"""The trace readers on the real shipped sample files."""

from __future__ import annotations

import csv
import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from sglang_ppd.workload import TurnSpec, Workload, load_trace, load_workload
from sglang_ppd.workload.azure import parse_timestamp_s
from sglang_ppd.workload.grammar import build_workload
from sglang_ppd.workload.loader import detect_format

DATA = Path(str(resources.files("sglang_ppd.workload") / "data"))
AZURE = DATA / "azure_conv_2023.csv"
MOONCAKE = DATA / "mooncake_conversation_first30min.jsonl"
SIDECAR = DATA / "mooncake_conversation_first1500.sessions.csv"
SHAREGPT = DATA / "sharegpt_v3_turn_tokens_first1500.csv"


def check_chains(workload: Workload, *, closed_loop: bool) -> None:
    """Ordered by session then turn; turns 1..k contiguous; request ids unique."""
    seen: set[str] = set()
    prev: TurnSpec | None = None
    for t in workload:
        assert t.session_id not in seen or (prev is not None and prev.session_id == t.session_id)
        if prev is not None and prev.session_id == t.session_id:
            assert t.turn == prev.turn + 1
            assert t.history_len > 0
            if closed_loop:
                assert t.history_len == prev.input_len + prev.output_len
                assert t.arrival_s is None
            else:
                assert t.arrival_s is not None and prev.arrival_s is not None
                assert t.arrival_s >= prev.arrival_s
        else:
            assert t.turn == 1 and t.history_len == 0 and t.arrival_s is not None
        seen.add(t.session_id)
        prev = t
    assert len({t.request_id for t in workload}) == len(workload)


def test_azure_full_sample() -> None:
    w = load_trace(AZURE)
    assert len(w) == 19366
    assert (w[0].input_len, w[0].output_len, w[0].arrival_s) == (374, 44, 0.0)
    # Row 2 is 2023-11-16 18:15:50.9951690, 4.3145790 s after row 1.
    assert w[1].arrival_s == pytest.approx(4.314579, abs=1e-5)
    assert w[-1].arrival_s == pytest.approx(3502, abs=1.0)
    assert all(t.turn == 1 and t.history_len == 0 for t in w)
    check_chains(w, closed_loop=False)


def test_azure_rate_scale_and_limit() -> None:
    w = load_trace(AZURE, limit=100, rate_scale=2.0)
    base = load_trace(AZURE, limit=100)
    assert len(w) == 100
    assert [t.arrival_s for t in w] == pytest.approx([(t.arrival_s or 0) / 2 for t in base])


def test_timestamp_formats() -> None:
    a = parse_timestamp_s("2023-11-16 18:15:46.6805900")
    assert parse_timestamp_s("2023-11-16T18:15:47.6805900Z") - a == pytest.approx(1.0)
    assert parse_timestamp_s("2023-11-16 19:15:46.6805900+01:00") - a == pytest.approx(0.0)
    assert parse_timestamp_s("12.5") == 12.5
    with pytest.raises(ValueError, match="TIMESTAMP"):
        parse_timestamp_s("yesterday")


def test_mooncake_sample() -> None:
    w = build_workload("mooncake:n=1500", seed=3)
    assert len(w) == 1500
    first = next(t for t in w if t.session_id == "mc1")
    assert (first.input_len, first.output_len, first.shared_prefix_len) == (6758, 500, 512)
    check_chains(w, closed_loop=False)
    by_id = {t.request_id: t for t in w}
    for t in w:
        if t.turn > 1:
            p = by_id[f"{t.session_id}#{t.turn - 1}"]
            assert t.history_len == min(p.input_len + p.output_len, t.input_len - 1)
    # Quantized 3-s timestamps are spread inside their bucket: no two arrivals coincide.
    arrivals = sorted(t.arrival_s or 0.0 for t in w)
    assert len(set(arrivals)) == len(arrivals)
    assert arrivals[-1] < 1500 * 3.0


def test_mooncake_sessions_match_sidecar() -> None:
    """The loader's inferred conversations agree with the heuristic's sidecar; the differences are
    the forks (a second continuation of one parent), which start new sessions here."""
    w = build_workload("mooncake:n=1500")
    rows = list(csv.DictReader(SIDECAR.read_text().splitlines()))
    ours = sorted(w, key=lambda t: t.arrival_s or 0.0)
    assert [t.input_len for t in ours] == [int(r["input_length"]) for r in rows]
    parent_count: dict[str, int] = {}
    agree = forks = 0
    for t, r in zip(ours, rows, strict=True):
        parent = r["parent_line"]
        is_fork = bool(parent) and parent_count.get(parent, 0) > 0
        if parent:
            parent_count[parent] = parent_count.get(parent, 0) + 1
        forks += is_fork
        expected_cont = bool(parent) and not is_fork
        agree += (t.turn > 1) == expected_cont
    n_cont = sum(1 for r in rows if r["parent_line"])
    assert n_cont > 200
    assert forks < n_cont / 3
    # Popularity is counted over the 1,500 shipped lines, the sidecar over the 30-min window.
    assert agree >= 0.99 * len(rows)
    assert sum(t.turn > 1 for t in w) >= 0.95 * (n_cont - forks)


def test_sharegpt_table_sessions() -> None:
    w = load_trace(SHAREGPT, seed=1)
    check_chains(w, closed_loop=True)
    s0 = [t for t in w if t.session_id == "sg0"]
    # conv 0: (34, 244), (36, 320), (18, 275), ...
    assert (s0[0].input_len, s0[0].output_len) == (34, 244)
    assert (s0[1].input_len, s0[1].history_len, s0[1].output_len) == (34 + 244 + 36, 34 + 244, 320)
    assert s0[2].input_len == 34 + 244 + 36 + 320 + 18
    assert all(t.input_len + t.output_len <= 131072 for t in w)
    assert sum(t.turn > 1 for t in w) > len(w) / 2
    starts = [t.arrival_s or 0.0 for t in w if t.turn == 1]
    assert starts == sorted(starts)


def test_sharegpt_context_cap_and_limit() -> None:
    capped = load_trace(SHAREGPT, max_context_len=4096)
    assert all(t.input_len + t.output_len <= 4096 for t in capped)
    assert len(capped) < len(load_trace(SHAREGPT))
    assert len(load_trace(SHAREGPT, limit=37)) == 37


def test_gzip_and_unknown_format(tmp_path: Path) -> None:
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress("\n".join(MOONCAKE.read_text().splitlines()[:20]).encode()))
    assert len(load_trace(gz)) == 20
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="unknown trace format"):
        load_trace(bad)
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "missing.csv")
    assert detect_format('{"timestamp": 0, "input_length": 1, "output_length": 1}') == "mooncake"
    assert detect_format("conv_idx,turn,user_tokens,assistant_tokens") == "sharegpt"


def test_load_workload_requires_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        load_workload()
    with pytest.raises(ValueError, match="exactly one"):
        load_workload(trace=str(AZURE), spec="azure:")
    assert len(load_workload(trace=str(AZURE), limit=5)) == 5


def test_mooncake_limit_keeps_the_full_runs_arrivals() -> None:
    """The first 10 rows all share timestamp 0; they are still spread over its 3-s bucket, exactly as
    in a run over the whole file."""
    short, full = load_trace(MOONCAKE, limit=10, seed=5), load_trace(MOONCAKE, seed=5)
    arrivals = {t.request_id: t.arrival_s for t in full}
    assert len(short) == 10 and 1.0 < max(t.arrival_s or 0.0 for t in short) < 3.0
    assert all(t.arrival_s == arrivals[t.request_id] for t in short if t.turn == 1)


def test_mooncake_window() -> None:
    """``start_s``/``duration_s`` keep the rows of that window of the trace, re-based to 0; the
    30-minute trace ships whole (5,719 rows, timestamps 0 to 1,797 s)."""
    assert len(build_workload("mooncake:", seed=0)) == 5719
    rows = [json.loads(line) for line in MOONCAKE.read_text().splitlines()]
    inside = [r for r in rows if 900_000 <= r["timestamp"] < 1_200_000]
    w = build_workload("mooncake:start_s=900,duration_s=300", seed=0)
    assert sorted(t.input_len for t in w) == sorted(r["input_length"] for r in inside)
    assert all(0.0 <= (t.arrival_s or 0.0) < 303.0 for t in w)
    # Sessions are inferred inside the window: a conversation begun before it restarts at turn 1.
    assert any(t.turn > 1 for t in w) and min(t.arrival_s or 0.0 for t in w) < 3.0
    with pytest.raises(ValueError, match="yields no requests"):
        build_workload("mooncake:start_s=5000", seed=0)
