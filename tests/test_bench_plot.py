"""The sim-vs-live plotting command on hand-made result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sglang_ppd.bench.cli import main as bench_main
from sglang_ppd.bench.plot import collect, extract, lookup, main
from sglang_ppd.core.types import Slo
from sglang_ppd.metrics import RequestRecord, summarize


def result(policy: str, rate_scale: float, ttft_s: float, seed: int, live: bool) -> dict[str, object]:
    rec = RequestRecord("s#1", "s", 1, 10, 5, 0.0, ttft_s, ttft_s + 0.04, "pd")
    extra: dict[str, Any] = {"mode": "live"} if live else {}
    return summarize([rec], slo=Slo(), wall_s=1.0, policy=policy, seed=seed, rate_scale=rate_scale, **extra)


def test_collect_groups_by_mode_and_policy_and_averages_seeds() -> None:
    results = [
        result("pd", 1.0, 0.1, 0, live=False),
        result("pd", 1.0, 0.3, 1, live=False),
        result("pd", 2.0, 0.5, 0, live=False),
        result("pd", 1.0, 0.15, 0, live=True),
    ]
    series = collect(results, "turn1.ttft_ms.p95", "rate_scale")
    assert set(series) == {("sim", "pd"), ("live", "pd")}
    assert [x for x, _ in series[("sim", "pd")]] == [1.0, 2.0]
    assert series[("sim", "pd")][0][1] == 200.0
    assert lookup(results[0], "turn2plus.ttft_ms.p95") is None


@pytest.mark.slow
def test_plot_writes_png_and_skips_bad_files(tmp_path: Path) -> None:
    files = []
    for i, (policy, live) in enumerate([("pd", False), ("ppd", False), ("ppd", True)]):
        for rs in (1.0, 2.0):
            f = tmp_path / f"r{i}_{rs}.json"
            f.write_text(json.dumps(result(policy, rs, 0.1 * rs, 0, live)))
            files.append(str(f))
    (tmp_path / "junk.json").write_text("not json")
    runs = [result("pd", 3.0, 0.2, 0, live=False), {"no": "x"}]
    (tmp_path / "many.json").write_text(json.dumps({"figure": "f", "runs": runs}))
    assert len(extract(json.loads((tmp_path / "many.json").read_text()), "rate_scale")) == 1
    files.append(str(tmp_path / "many.json"))
    out = tmp_path / "plot.png"
    assert main([*files, str(tmp_path / "junk.json"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "junk.json"), "--out", str(out)]) == 2
    out.unlink()
    assert bench_main(["plot", *files, "--out", str(out)]) == 0 and out.exists()
