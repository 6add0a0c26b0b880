"""``load_trace``: read any supported trace file, its format detected from the content."""

from __future__ import annotations

import gzip
from pathlib import Path

from sglang_ppd.workload import azure, mooncake, sharegpt
from sglang_ppd.workload.dists import Dist
from sglang_ppd.workload.sessions import DEFAULT_MAX_CONTEXT_LEN
from sglang_ppd.workload.spec import Workload

FORMATS = (
    "Azure LLM inference CSV (header TIMESTAMP,ContextTokens,GeneratedTokens)",
    "Mooncake JSONL (one object per line with timestamp, input_length, output_length, hash_ids)",
    "ShareGPT turn table CSV (header conv_idx,turn,user_tokens,assistant_tokens[,system_tokens])",
)


def detect_format(first_line: str) -> str | None:
    """ "azure", "mooncake", "sharegpt" or ``None``."""
    line = first_line.strip().lstrip("\ufeff")
    if line.startswith("{"):
        keys = ('"timestamp"', '"input_length"', '"output_length"')
        return "mooncake" if all(k in line for k in keys) else None
    columns = {c.strip() for c in line.split(",")}
    if set(azure.HEADER) <= columns:
        return "azure"
    if set(sharegpt.HEADER[:4]) <= columns:
        return "sharegpt"
    return None


def read_lines(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8-sig").splitlines()


def load_trace(
    path: str | Path,
    *,
    limit: int | None = None,
    rate_scale: float = 1.0,
    seed: int = 0,
    session_rate: float = sharegpt.DEFAULT_SESSION_RATE,
    think: Dist = sharegpt.DEFAULT_THINK,
    max_context_len: int = DEFAULT_MAX_CONTEXT_LEN,
) -> Workload:
    """Read a trace file (optionally gzipped) into a workload of at most ``limit`` requests.

    ``rate_scale`` multiplies the arrival rate: open-loop arrival times are divided by it, and for
    the ShareGPT table (closed-loop sessions, no timestamps) it scales ``session_rate``.
    ``seed`` places Mooncake requests inside their 3-s timestamp buckets and draws ShareGPT session
    arrivals and think times (``think``); ``max_context_len`` ends ShareGPT sessions that outgrow
    the model's context.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not rate_scale > 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    lines = read_lines(path)
    first = next((line for line in lines if line.strip()), "")
    fmt = detect_format(first)
    source = str(path)
    if fmt == "azure":
        workload = azure.parse_azure(lines, source, limit=limit, rate_scale=rate_scale)
    elif fmt == "mooncake":
        workload = mooncake.parse_mooncake(lines, source, limit=limit, rate_scale=rate_scale, seed=seed)
    elif fmt == "sharegpt":
        workload = sharegpt.sessions_workload(
            sharegpt.parse_conversations(lines, source),
            seed=seed,
            session_rate=session_rate,
            rate_scale=rate_scale,
            think=think,
            max_context_len=max_context_len,
            limit=limit,
        )
    else:
        raise ValueError(
            f"{path}: unknown trace format (first line {first[:80]!r}); supported:\n  " + "\n  ".join(FORMATS)
        )
    if not workload:
        raise ValueError(f"{path}: the trace yields no requests")
    return workload
