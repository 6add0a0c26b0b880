"""What a worker's scheduler hands its driver: one iteration, its outcome, and the load it publishes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Iteration:
    """One forward pass, or ``num_steps`` identical-composition decode steps taken as one leap."""

    num_steps: int
    duration_ms: float
    first_step_ms: float
    chunks: tuple[tuple[str, int, int], ...]
    """(request id, new tokens, cached tokens before the chunk)."""
    joined: tuple[str, ...]
    """Transferred requests whose first decode step (their first token) is this iteration's first."""
    num_decodes: int
    context_tokens: int
    """Σ context read by the first decode step."""


@dataclass(frozen=True, slots=True)
class Outcome:
    first_token: tuple[str, ...]
    """Emitted ``first_step_ms`` after the iteration started (= its end unless it was a leap)."""
    finished: tuple[str, ...]
    prefill_done: tuple[str, ...]
    """Prefill workers: prompts fully computed, KV ready to send."""
    allocated: tuple[tuple[str, int], ...]
    """Decode workers: incoming transfers now preallocated, with the number of tokens to send."""


@dataclass(frozen=True, slots=True)
class LoadStats:
    num_running: int
    num_waiting: int
    queued_prefill_tokens: int
    kv_used_tokens: int
    kv_capacity_tokens: int
    running_context_tokens: int
    num_local_prefills: int
    decode_iter_ms: float | None
    mixed_iter_ms: float | None
