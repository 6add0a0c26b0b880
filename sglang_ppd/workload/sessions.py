"""Closed-loop multi-turn sessions: per-turn (user tokens, output tokens) -> :class:`TurnSpec` chains.

Turn k's prompt is the whole history: turn k-1's prompt + turn k-1's output + the new user
message (plus, on turn 1, a shared system prompt). So ``history_len`` of turn k is exactly
``input_len + output_len`` of turn k-1, which is what the D worker that decoded turn k-1 holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sglang_ppd.workload.spec import TurnSpec

DEFAULT_MAX_CONTEXT_LEN = 131072


@dataclass(frozen=True, slots=True)
class Exchange:
    """One user message and the reply to it, in tokens."""

    user_len: int
    output_len: int


def clean_exchanges(raw: Sequence[tuple[int, int]]) -> list[Exchange]:
    """Make a recorded conversation replayable.

    An empty user message still costs one token (a turn always appends something). A user
    message that got no reply (output 0) is merged into the next user message, as the next
    prompt carries it anyway; a trailing unanswered message is dropped.
    """
    out: list[Exchange] = []
    carried = 0
    for user_len, output_len in raw:
        if output_len <= 0:
            carried += max(user_len, 0)
            continue
        out.append(Exchange(max(user_len + carried, 1), output_len))
        carried = 0
    return out


def closed_loop_session(
    session_id: str,
    exchanges: Sequence[Exchange],
    arrival_s: float,
    think_times_s: Sequence[float],
    *,
    shared_prefix_len: int = 0,
    max_context_len: int = DEFAULT_MAX_CONTEXT_LEN,
) -> list[TurnSpec]:
    """The turns of one session; it ends before the first turn whose prompt + output would not fit
    ``max_context_len`` (a session whose first turn does not fit yields no turns).
    ``think_times_s[k]`` is the pause before turn k+2 (index 0 is used for turn 2)."""
    turns: list[TurnSpec] = []
    history_len = 0
    for k, ex in enumerate(exchanges, start=1):
        input_len = history_len + ex.user_len + (shared_prefix_len if k == 1 else 0)
        if input_len + ex.output_len > max_context_len:
            break
        turns.append(
            TurnSpec(
                session_id=session_id,
                turn=k,
                input_len=input_len,
                output_len=ex.output_len,
                history_len=history_len,
                arrival_s=arrival_s if k == 1 else None,
                think_time_s=0.0 if k == 1 else float(think_times_s[k - 2]),
                shared_prefix_len=shared_prefix_len,
            )
        )
        history_len = input_len + ex.output_len
    return turns
