"""Package one validate_ppd.sh device run into benchmarks/results/gpu_ppd_<model>/ and check (a)-(c).

usage: python benchmarks/gpu/collect_results.py FILES_AT MODEL
  FILES_AT: the folder the device call's files landed in (holds MODEL.log and MODEL/{results.json,
  bundle.tar.gz}). Writes benchmarks/results/gpu_ppd_<model>/ with results.json, extras.json,
  iter.jsonl.gz, validate.log, logs.tar.gz and checks.json (the verdicts below, recomputed here).
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
P_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] Prefill batch, #new-seq: \d+, "
    r"#new-token: (\d+), #cached-token: (\d+)"
)


def p_prefills(p_log: str) -> list[tuple[float, int, int]]:
    """(UTC epoch second, new tokens, cached tokens) of P's prefill batches."""
    out = []
    for line in p_log.splitlines():
        m = P_LINE.match(line)
        if m:
            t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            out.append((float(t), int(m.group(2)), int(m.group(3))))
    return out


def checks(res: dict[str, Any], p_log: str, gpu_rows: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = res["ab"]["a"], res["ab"]["b"]
    # A Turn 2 sent to P would hit P's own cache of the Turn-1 prompt (2000 tokens); the log's 1 s
    # resolution also catches SGLang's 1-token health checks and the next phase's fresh prompts.
    during = [
        (n, k) for t, n, k in p_prefills(p_log) if b["t_send"] - 1 <= t <= b["t_done"] + 1 and k >= 1000
    ]
    deflect = [r["chunks"] for r in gpu_rows if "val-deflect" in r.get("rids", [])]
    c = res["c"]
    return {
        "a_pd_through_router": {
            "ok": a["status"] == 200 and a["route"] == "pd" and a["completion_tokens"] == 32,
            "route": a["route"],
            "completion_tokens": a["completion_tokens"],
        },
        "b_turn2_local_no_transfer": {
            "ok": b["status"] == 200
            and b["route"] == "local"
            and b["cached_tokens"] >= b["history_len"] - 2
            and not during,
            "route": b["route"],
            "cached_tokens": b["cached_tokens"],
            "history_len": b["history_len"],
            "prompt_len": b["prompt_len"],
            "p_prefill_batches_during_turn2": during,
        },
        "c_deflected_prefill_chunked_on_d": {
            "ok": c["status"] == 200 and c["completion_tokens"] == 8 and len(deflect) > 1,
            "chunks_new_cached": [ch for row in deflect for ch in row],
            "ttft_e2e_ms": round(c["e2e_ms"], 1),
        },
    }


def main() -> None:
    files_at, model = Path(sys.argv[1]), sys.argv[2]
    dest = ROOT / "benchmarks" / "results" / f"gpu_ppd_{model}"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(files_at / model / "bundle.tar.gz") as tf:
            tf.extractall(tmp, filter="data")
        t = Path(tmp)
        shutil.copy(files_at / model / "results.json", dest / "results.json")
        shutil.copy(t / "extras.json", dest / "extras.json")
        shutil.copy(t / "iter.jsonl.gz", dest / "iter.jsonl.gz")
        shutil.copy(files_at / f"{model}.log", dest / "validate.log")
        with tarfile.open(dest / "logs.tar.gz", "w:gz") as out:
            for name in ("P.log", "D.log", "router.log"):
                out.add(t / name, arcname=name)
        p_log = (t / "P.log").read_text(errors="replace")
    import gzip

    with gzip.open(dest / "iter.jsonl.gz", "rt") as f:
        gpu_rows = [r for r in map(json.loads, f) if r.get("row") == "gpu"]
    res = json.loads((dest / "results.json").read_text())
    head = (dest / "validate.log").read_text().splitlines()[1].split(",")
    verdicts = {
        "device": head[0].strip(),
        "driver": head[-1].strip(),
        "sglang": "0.5.17",
        "date": res["date"],
        "machine": res["machine"],
        "seed": res["seed"],
        "model": model,
        "command": f"bash benchmarks/gpu/validate_ppd.sh 540 {model} (gpu_bundle carried)",
        **checks(res, p_log, gpu_rows),
    }
    (dest / "checks.json").write_text(json.dumps(verdicts, indent=1))
    print(json.dumps(verdicts, indent=1))


if __name__ == "__main__":
    main()
