"""Size-capped msgpack decoding for the ZMQ gauges (LoadStat, our worker telemetry)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def decode_bounded(decoder: msgspec.msgpack.Decoder[T], payload: bytes, max_bytes: int, what: str) -> T:
    """Raises ``ValueError`` on oversized or malformed payloads (the caller drops and counts them)."""
    if len(payload) > max_bytes:
        raise ValueError(f"{what} of {len(payload)} bytes exceeds {max_bytes}")
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed {what}: {exc}") from None


MAX_GAUGE = 2**53
"""Largest count or time a worker may report: past it (or non-finite) a gauge is a bug or an attack,
never a real load (2**53 tokens or milliseconds is far beyond any cluster)."""


class OutOfRange(ValueError):
    """A decoded gauge is not a finite number in its range: the message is dropped and counted."""


def check_gauges(what: str, values: dict[str, Any], signed: Collection[str] = ()) -> None:
    """Every number in ``values`` must be finite and in ``0..MAX_GAUGE`` (``-MAX_GAUGE..`` for the
    names in ``signed``, such as a headroom that goes negative when a worker is over its budget)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low = -MAX_GAUGE if name in signed else 0
        if not (math.isfinite(value) and low <= value <= MAX_GAUGE):
            raise OutOfRange(f"{what}: {name}={value!r} is not a finite number in {low}..{MAX_GAUGE}")
