"""The workload contract shared by the simulator, the emulated cluster and the live replayer.

A workload is a tuple of :class:`TurnSpec`, ordered by (session, turn). Token identity is modelled
per session: turn k's prompt is the session's token stream up to ``input_len``, and its first
``history_len`` tokens are exactly turn k-1's prompt plus turn k-1's output (what the D worker that
decoded turn k-1 holds). ``shared_prefix_len`` leading tokens are a system prompt common to every
session of the workload (Mooncake's block 0).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnSpec:
    session_id: str
    turn: int
    """1-based turn number within the session."""
    input_len: int
    """Full prompt length in tokens, history included."""
    output_len: int
    history_len: int
    """Leading prompt tokens that are the previous turn's prompt + output (0 on turn 1)."""
    arrival_s: float | None
    """Open-loop arrival time; ``None`` for a closed-loop turn sent ``think_time_s`` after the
    previous turn of the session finishes."""
    think_time_s: float = 0.0
    shared_prefix_len: int = 0

    def __post_init__(self) -> None:
        if self.turn < 1 or self.input_len < 1 or self.output_len < 1:
            raise ValueError(f"bad turn spec {self}: turn, input_len and output_len must be >= 1")
        if not 0 <= self.history_len < self.input_len:
            raise ValueError(f"bad turn spec {self}: need 0 <= history_len < input_len")
        if self.turn == 1 and self.arrival_s is None:
            raise ValueError(f"bad turn spec {self}: a session's first turn needs an arrival time")

    @property
    def request_id(self) -> str:
        return f"{self.session_id}#{self.turn}"

    @property
    def new_len(self) -> int:
        """The append-prefill length when the history is resident."""
        return self.input_len - self.history_len


Workload = tuple[TurnSpec, ...]
