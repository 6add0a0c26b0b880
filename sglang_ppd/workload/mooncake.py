"""Mooncake FAST'25 JSONL traces (``timestamp`` ms, ``input_length``, ``output_length``, ``hash_ids``)
as open-loop multi-turn sessions, the conversations inferred from the prefix-block hashes.

``hash_ids`` are chained hashes of 512-token prompt blocks: equal ids mean an equal prefix. A
request R continues an earlier request P when R's leading ids are exactly P's full blocks (R's
prompt starts with P's whole prompt, up to P's last partial block) and the last matched block is
private, i.e. appears in at most ``private_max_count`` requests of the file: a prefix that many
requests share is a system prompt, not a conversation. Among the candidates the longest match
wins. This is the rule of ``shared/traces/tools/mooncake_sessions.py``.

Block popularity is counted over the rows read (``limit``), so a prefix of a file can infer a few
more continuations than the whole file does.

A second continuation of the same P (a regenerated or edited reply) forks the conversation. A
:class:`TurnSpec` session is one linear chain, so a fork starts a new session at turn 1: only the
first continuation keeps P's decode-side history.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from sglang_ppd.workload.spec import TurnSpec, Workload

BLOCK_LEN = 512
PRIVATE_MAX_COUNT = 32
SAMPLE_FILE = "mooncake_conversation_first30min.jsonl"


@dataclass(frozen=True, slots=True)
class MooncakeRow:
    timestamp_ms: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Inferred:
    """Per row: its session root row, turn, and the parent row it continues (``None`` on turn 1)."""

    root: int
    turn: int
    parent: int | None


def parse_rows(lines: list[str], source: str) -> list[MooncakeRow]:
    rows: list[MooncakeRow] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            rows.append(
                MooncakeRow(
                    float(obj["timestamp"]),
                    max(int(obj["input_length"]), 1),
                    max(int(obj["output_length"]), 1),
                    tuple(int(h) for h in obj.get("hash_ids", ())),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{lineno}: bad Mooncake row ({exc!r}): {line[:120]}") from None
    return rows


def infer_sessions(rows: list[MooncakeRow], private_max_count: int = PRIVATE_MAX_COUNT) -> list[Inferred]:
    popularity = Counter(h for r in rows for h in set(r.hash_ids))
    by_full_prefix: dict[tuple[int, ...], int] = {}
    has_child: set[int] = set()
    out: list[Inferred] = []
    for i, r in enumerate(rows):
        h = r.hash_ids
        parent: int | None = None
        # R must add at least one block of its own, hence the longest candidate is len(h) - 1.
        for n in range(len(h) - 1, 0, -1):
            p = by_full_prefix.get(h[:n])
            if p is not None:
                if popularity[h[n - 1]] <= private_max_count and p not in has_child:
                    parent = p
                break
        if parent is None:
            out.append(Inferred(i, 1, None))
        else:
            has_child.add(parent)
            out.append(Inferred(out[parent].root, out[parent].turn + 1, parent))
        num_full = r.input_len // BLOCK_LEN
        if num_full >= 1:
            by_full_prefix.setdefault(h[:num_full], i)
    return out


def arrivals_s(rows: list[MooncakeRow], seed: int) -> np.ndarray:
    """Arrival seconds from the first row. Quantized timestamps (many rows per distinct value, as
    in the conversation trace's 3-s buckets) are spread uniformly over their bucket; the random
    offsets are sorted so file order stays arrival order (a continuation never precedes its parent)."""
    ts = np.array([r.timestamp_ms for r in rows], dtype=float)
    if len(ts) == 0:
        return ts
    ts -= ts.min()
    distinct = np.unique(ts)
    if len(distinct) >= 2 and len(distinct) <= len(ts) / 2:
        bucket_ms = float(np.median(np.diff(distinct)))
        rng = np.random.default_rng([seed, 2])
        spread = ts.copy()
        for value in distinct:
            idx = np.flatnonzero(ts == value)
            spread[idx] = value + np.sort(rng.uniform(0.0, bucket_ms, len(idx)))
        ts = spread
    return ts / 1000.0


def window_lines(lines: list[str], source: str, start_s: float, end_s: float) -> list[str]:
    """The rows whose timestamp lies in [start_s, end_s), in file order (the simulator re-bases their
    arrivals to the window's first row). A session that began before the window starts anew in it."""
    rows = parse_rows(lines, source)
    kept = [line for line in lines if line.strip()]
    return [line for line, r in zip(kept, rows, strict=True) if start_s <= r.timestamp_ms / 1000.0 < end_s]


def parse_mooncake(
    lines: list[str],
    source: str,
    *,
    limit: int | None,
    rate_scale: float,
    seed: int,
    private_max_count: int = PRIVATE_MAX_COUNT,
) -> Workload:
    # Arrivals come from the whole file, so that the first N rows arrive as they do in a full run
    # (and a short prefix inside one timestamp bucket is still spread over it).
    all_rows = parse_rows(lines, source)
    rows = all_rows[:limit]
    inferred = infer_sessions(rows, private_max_count)
    arrivals = arrivals_s(all_rows, seed)[: len(rows)] / rate_scale
    common = Counter(r.hash_ids[0] for r in rows if r.hash_ids).most_common(1)
    shared_block = common[0][0] if common and common[0][1] > len(rows) / 2 else None
    turns: list[TurnSpec] = []
    for i, (r, inf) in enumerate(zip(rows, inferred, strict=True)):
        history_len = 0
        if inf.parent is not None:
            p = rows[inf.parent]
            history_len = min(p.input_len + p.output_len, r.input_len - 1)
        shared = r.input_len > BLOCK_LEN and bool(r.hash_ids) and r.hash_ids[0] == shared_block
        turns.append(
            TurnSpec(
                session_id=f"mc{inf.root + 1}",
                turn=inf.turn,
                input_len=r.input_len,
                output_len=r.output_len,
                history_len=history_len,
                arrival_s=float(arrivals[i]),
                shared_prefix_len=BLOCK_LEN if shared else 0,
            )
        )
    # Roots are in file order, and so in arrival order; a session's turns follow its root.
    order = sorted(range(len(turns)), key=lambda i: (inferred[i].root, inferred[i].turn))
    return tuple(turns[i] for i in order)
