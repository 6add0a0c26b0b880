"""The ShareGPT per-turn token table (``conv_idx,turn,user_tokens,assistant_tokens,system_tokens``)
as closed-loop multi-turn sessions.

The table has no timestamps: sessions start as a Poisson (or Gamma, given CV) process at a session
rate, and each later turn is sent a think time after the previous one finishes.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence

import numpy as np

from sglang_ppd.workload.arrivals import arrival_times_s
from sglang_ppd.workload.dists import Dist
from sglang_ppd.workload.samples import sample_lines
from sglang_ppd.workload.sessions import (
    DEFAULT_MAX_CONTEXT_LEN,
    Exchange,
    clean_exchanges,
    closed_loop_session,
)
from sglang_ppd.workload.spec import TurnSpec, Workload

HEADER = ("conv_idx", "turn", "user_tokens", "assistant_tokens", "system_tokens")
SAMPLE_FILE = "sharegpt_v3_turn_tokens_first1500.csv"
DEFAULT_SESSION_RATE = 1.0
DEFAULT_THINK = Dist("exp", (5.0,))

Conversation = tuple[str, tuple[Exchange, ...]]


def parse_conversations(lines: list[str], source: str) -> list[Conversation]:
    """Conversations in file order, as (id, cleaned exchanges); empty ones are dropped.
    The system prompt of a conversation is part of its first user message."""
    rows: dict[str, list[tuple[int, int, int]]] = {}
    reader = csv.DictReader(lines)
    missing = set(HEADER[:4]) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: not a ShareGPT turn table, missing columns {sorted(missing)}")
    for lineno, row in enumerate(reader, start=2):
        try:
            system = int(row.get("system_tokens") or 0)
            turn, user, out = int(row["turn"]), int(row["user_tokens"]), int(row["assistant_tokens"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}:{lineno}: bad ShareGPT row {row}") from None
        rows.setdefault(f"sg{row['conv_idx']}", []).append((turn, user + system, out))
    convs = []
    for conv_id, turns in rows.items():
        turns.sort()
        exchanges = clean_exchanges([(user, out) for _, user, out in turns])
        if exchanges:
            convs.append((conv_id, tuple(exchanges)))
    return convs


@functools.lru_cache(maxsize=1)
def sample_conversations() -> tuple[Conversation, ...]:
    """The shipped ShareGPT subset (see ``data/README.md``)."""
    return tuple(parse_conversations(sample_lines(SAMPLE_FILE), SAMPLE_FILE))


@functools.cache
def empirical(column: str) -> tuple[int, ...]:
    """Empirical samples from the shipped table: "prompt" (first user message), "user" (later user
    messages), "output" (replies) or "turns" (turns per conversation)."""
    convs = sample_conversations()
    if column == "prompt":
        return tuple(ex[0].user_len for _, ex in convs)
    if column == "user":
        return tuple(e.user_len for _, ex in convs for e in ex[1:])
    if column == "output":
        return tuple(e.output_len for _, ex in convs for e in ex)
    if column == "turns":
        return tuple(len(ex) for _, ex in convs)
    raise ValueError(f"no ShareGPT column {column!r}")


def sessions_workload(
    convs: Sequence[Conversation],
    *,
    seed: int,
    session_rate: float = DEFAULT_SESSION_RATE,
    rate_scale: float = 1.0,
    cv: float = 1.0,
    think: Dist = DEFAULT_THINK,
    max_context_len: int = DEFAULT_MAX_CONTEXT_LEN,
    shared_prefix_len: int = 0,
    limit: int | None = None,
) -> Workload:
    """Closed-loop sessions, one per conversation in the given order, arriving at
    ``session_rate * rate_scale`` sessions per second. ``limit`` caps the number of requests."""
    if not rate_scale > 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    rng = np.random.default_rng(seed)
    starts = arrival_times_s(rng, len(convs), session_rate * rate_scale, cv)
    out: list[TurnSpec] = []
    for (conv_id, exchanges), start in zip(convs, starts, strict=True):
        thinks = think.sample(rng, max(len(exchanges) - 1, 0))
        out += closed_loop_session(
            conv_id,
            exchanges,
            float(start),
            thinks.tolist(),
            shared_prefix_len=shared_prefix_len,
            max_context_len=max_context_len,
        )
        if limit is not None and len(out) >= limit:
            break
    return tuple(out[:limit])


def sample_sessions(convs: Sequence[Conversation], num: int, seed: int) -> list[Conversation]:
    """``num`` conversations drawn at random (without replacement while possible); repeated draws
    get a ``.N`` suffix so session ids stay unique."""
    rng = np.random.default_rng([seed, 1])
    picks: list[int] = []
    while len(picks) < num:
        perm = rng.permutation(len(convs)).tolist()
        picks += perm[: num - len(picks)]
    seen: dict[int, int] = {}
    out = []
    for i in picks:
        n = seen.get(i, 0)
        seen[i] = n + 1
        conv_id, exchanges = convs[i]
        out.append((f"{conv_id}.{n}" if n else conv_id, exchanges))
    return out
