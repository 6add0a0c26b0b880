"""Writing result JSON files with the machine, date and seed every reported number needs."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sglang_ppd.metrics.record import RequestRecord


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where and when a result was produced."""
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_result_json(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as indented JSON, adding ``machine`` and ``date`` when the caller did not.
    Non-finite floats are written as ``null`` so the file stays strict JSON."""
    data = dict(summary)
    data.setdefault("machine", machine_info())
    data.setdefault("date", data["machine"].get("date") if isinstance(data["machine"], dict) else None)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
    return p


def write_records_jsonl(path: str | Path, records: list[RequestRecord]) -> Path:
    """One JSON object per request (the record's fields plus ``ttft_ms`` and ``tpot_ms``), so a
    stricter SLO or another percentile can be applied after a run that cannot be repeated (a GPU
    run). The per-token ``itl_ms`` are left out: they would make a file per run too large to bring
    back, and the result JSON keeps their statistics."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as f:
        for r in records:
            row = asdict(r) | {"ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms}
            del row["itl_ms"]
            f.write(json.dumps(_finite(row), allow_nan=False) + "\n")
    return p


def read_records_jsonl(path: str | Path) -> list[RequestRecord]:
    """The records :func:`write_records_jsonl` wrote (``itl_ms`` absent; the derived ``ttft_ms`` and
    ``tpot_ms`` are recomputed by the record itself)."""
    names = {f.name for f in fields(RequestRecord)}
    rows = (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())
    return [RequestRecord(**{k: v for k, v in row.items() if k in names}) for row in rows]


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
