"""A deterministic byte tokenizer and deterministic output tokens.

Text prompts become their UTF-8 bytes (ids 0..255). Output tokens are lowercase letters and spaces,
so the text of an answer tokenizes back to exactly its ids: a client that appends the answer's text
to the next turn's prompt reproduces the token stream the worker cached. Output token ``i`` is a
hash of the prompt's ids and ``i``, so the same prompt gives the same answer on every route and worker
(P's first token equals D's first token; a PD and a local route produce identical text).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

_ALPHABET = b"abcdefghijklmnopqrstuvwxyz "
VOCAB_SIZE = 256


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def text_bytes(ids: Sequence[int]) -> bytes:
    # Ids from a real model tokenizer can exceed a byte; fold them into printable ASCII.
    return bytes(i if i < 128 else 32 + i % 95 for i in ids)


def decode(ids: Sequence[int]) -> str:
    return text_bytes(ids).decode("ascii")


def prompt_digest(input_ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(array("q", input_ids).tobytes(), digest_size=16).digest()


def output_token(digest: bytes, position: int) -> int:
    h = hashlib.blake2b(digest + position.to_bytes(8, "little"), digest_size=8).digest()
    return _ALPHABET[int.from_bytes(h, "little") % len(_ALPHABET)]


def output_tokens(input_ids: Sequence[int], num_tokens: int) -> list[int]:
    digest = prompt_digest(input_ids)
    return [output_token(digest, i) for i in range(num_tokens)]
