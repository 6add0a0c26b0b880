"""Size-capped msgpack decoding for the ZMQ gauges (LoadStat, our worker telemetry)."""

from __future__ import annotations

from typing import TypeVar

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
