"""Deterministic pseudo-random prompt token ids: the same seed gives the same prompts on any machine.

Ids are drawn from ``[FIRST_ID, vocab_size)``: low ids are special tokens in most tokenizers, and a
vocabulary of 32,000 keeps them valid for every common model.
"""

from __future__ import annotations

import hashlib

import numpy as np

FIRST_ID = 100
DEFAULT_VOCAB_SIZE = 32000


def _rng(seed: int, *key: str) -> np.random.Generator:
    digest = hashlib.blake2b("\x1f".join((str(seed), *key)).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def token_ids(seed: int, key: tuple[str, ...], num: int, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[int]:
    """``num`` ids that depend only on (seed, key, vocab_size)."""
    if num <= 0:
        return []
    if vocab_size <= FIRST_ID:
        raise ValueError(f"vocab_size must be > {FIRST_ID}, got {vocab_size}")
    ids: list[int] = _rng(seed, *key).integers(FIRST_ID, vocab_size, num).tolist()
    return ids


def shared_prefix(seed: int, num: int, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[int]:
    """The system prompt every session of a workload starts with."""
    return token_ids(seed, ("shared-prefix",), num, vocab_size)


def user_message(
    seed: int, session_id: str, turn: int, num: int, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> list[int]:
    """The new tokens of one turn (the user's message), unique to the session and turn."""
    return token_ids(seed, ("user", session_id, str(turn)), num, vocab_size)
