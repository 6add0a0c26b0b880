"""SGLang's KV-cache event wire format, as each supported release publishes it.

Transport (``srt/disaggregation/kv_events.py``, unchanged 0.5.17 - 0.5.23): the worker's
``ZmqEventPublisher`` PUB socket sends multipart ``[topic, seq (8-byte big-endian), msgpack(batch)]``;
``seq`` counts batches from 0 and a gap means lost batches. An optional ROUTER replay socket answers a
request ``[b"", start_seq as 8-byte big-endian]`` (sent from a DEALER; SGLang's ROUTER sees
``[identity, b"", start]``) with ``[b"", seq, payload]`` frames for every buffered batch ``>= start``
and then an end marker whose seq is ``-1`` and payload empty.

Payload shapes. The batch is always a positional array ``[ts, [event, ...], attn_dp_rank]``. Events:

- up to 0.5.19, tagged positional arrays ``["BlockStored", block_hashes, parent_block_hash, token_ids,
  block_size, lora_id, medium]``, ``["BlockRemoved", block_hashes, medium]``, ``["AllBlocksCleared"]``;
  0.5.19 appends a ``{"cache_salt": ...}`` metadata map to a salted ``BlockStored``;
- from 0.5.20, tagged maps with omitted defaults: ``{"type": "BlockStored", "block_hashes": ...}``
  without ``medium`` when it is ``None``; ``BlockStored`` gained ``cache_salt`` and ``session_id``
  (0.5.20) and ``lora_name`` (0.5.22).

The goldens in ``tests/goldens/`` are each release's own encoding. Decoding is of untrusted input:
:func:`decode_batch` types every field (msgspec), range-checks it, bounds the payload, and raises
:class:`KVEventDecodeError`, naming the field, for anything else.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 1_000_000
MAX_BLOCK_SIZE = 1 << 16
MAX_DP_RANK = 1 << 16
MAX_STR_LEN = 1024
MAX_TOKEN_ID = (1 << 32) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
END_SEQ = -1


class EventBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    attn_dp_rank: int | None = None


class KVCacheEvent(msgspec.Struct, gc=False):  # type: ignore[call-arg]
    """Base class of the three decoded events (every release's fields; :func:`encode_batch` writes
    0.5.17's positional shape, the one the emulator speaks)."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = None
    cache_salt: str | None = None
    session_id: str | None = None
    """The session whose request stored these blocks (0.5.20+; attribution only, not in the hash)."""
    lora_name: str | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(EventBatch):
    events: list[KVEvent]  # type: ignore[assignment]


class KVEventDecodeError(ValueError):
    """A payload that is not a KV event batch; the subscriber drops and counts it."""


# ---- decoding shapes: exactly what the releases send, typed by msgspec -------------------------------

_Tokens = list[int | list[int]]
"""Token ids; bigram-page models publish ``[token, next]`` pairs, of which the first is the token."""


class _Metadata(msgspec.Struct, gc=False):  # 0.5.19's BlockStoredMetadata
    cache_salt: str | None = None


class _PosStored(msgspec.Struct, array_like=True, gc=False, tag="BlockStored"):  # type: ignore[call-arg]
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: _Tokens
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    metadata: _Metadata | None = None


class _PosRemoved(msgspec.Struct, array_like=True, gc=False, tag="BlockRemoved"):  # type: ignore[call-arg]
    block_hashes: list[int]
    medium: str | None = None


class _PosCleared(msgspec.Struct, array_like=True, gc=False, tag="AllBlocksCleared"):  # type: ignore[call-arg]
    pass


class _PosBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[_PosStored | _PosRemoved | _PosCleared]
    attn_dp_rank: int | None = None


class _MapStored(msgspec.Struct, gc=False, tag="BlockStored"):  # type: ignore[call-arg]
    block_hashes: list[int]
    token_ids: _Tokens
    block_size: int
    parent_block_hash: int | None = None
    lora_id: int | None = None
    medium: str | None = None
    cache_salt: str | None = None
    session_id: str | None = None
    lora_name: str | None = None


class _MapRemoved(msgspec.Struct, gc=False, tag="BlockRemoved"):  # type: ignore[call-arg]
    block_hashes: list[int]
    medium: str | None = None


class _MapCleared(msgspec.Struct, gc=False, tag="AllBlocksCleared"):  # type: ignore[call-arg]
    pass


class _MapBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[_MapStored | _MapRemoved | _MapCleared]
    attn_dp_rank: int | None = None


_encoder = msgspec.msgpack.Encoder()


def _wire(e: KVEvent) -> list[Any]:
    if isinstance(e, BlockStored):
        stored = [e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size, e.lora_id, e.medium]
        return ["BlockStored", *stored]
    if isinstance(e, BlockRemoved):
        return ["BlockRemoved", e.block_hashes, e.medium]
    return ["AllBlocksCleared"]


def encode_batch(batch: KVEventBatch) -> bytes:
    """SGLang 0.5.17's encoding of ``batch`` (positional events)."""
    return _encoder.encode([batch.ts, [_wire(e) for e in batch.events], batch.attn_dp_rank])


def seq_to_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


def seq_from_bytes(raw: bytes) -> int:
    if len(raw) != 8:
        raise KVEventDecodeError(f"sequence frame must be 8 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big", signed=True)


def encode_message(topic: str, seq: int, batch: KVEventBatch) -> list[bytes]:
    """The three PUB frames SGLang sends for one batch."""
    return [topic.encode(), seq_to_bytes(seq), encode_batch(batch)]


_positional = msgspec.msgpack.Decoder(_PosBatch)
_tagged_map = msgspec.msgpack.Decoder(_MapBatch)


def _int64s(values: list[int], what: str) -> list[int]:
    if values and (min(values) < INT64_MIN or max(values) > INT64_MAX):
        raise KVEventDecodeError(f"{what} outside int64")
    return values


def _opt_int64(value: int | None, what: str) -> int | None:
    if value is not None and not INT64_MIN <= value <= INT64_MAX:
        raise KVEventDecodeError(f"{what} outside int64")
    return value


def _tokens(values: _Tokens) -> list[int]:
    out = [v if isinstance(v, int) else (v[0] if v else -1) for v in values]
    if out and (min(out) < 0 or max(out) > MAX_TOKEN_ID):
        raise KVEventDecodeError("token_ids must be non-negative 32-bit token ids (or non-empty pairs)")
    return out


def _opt_str(value: str | None, what: str) -> str | None:
    if value is not None and len(value) > MAX_STR_LEN:
        raise KVEventDecodeError(f"{what} longer than {MAX_STR_LEN} characters")
    return value


def _stored(e: _PosStored | _MapStored, cache_salt: str | None, session_id: str | None,
            lora_name: str | None) -> BlockStored:  # fmt: skip
    if not 1 <= e.block_size <= MAX_BLOCK_SIZE:
        raise KVEventDecodeError(f"block_size {e.block_size} outside 1..{MAX_BLOCK_SIZE}")
    return BlockStored(
        block_hashes=_int64s(e.block_hashes, "block_hashes"),
        parent_block_hash=_opt_int64(e.parent_block_hash, "parent_block_hash"),
        token_ids=_tokens(e.token_ids),
        block_size=e.block_size,
        lora_id=_opt_int64(e.lora_id, "lora_id"),
        medium=_opt_str(e.medium, "medium"),
        cache_salt=_opt_str(cache_salt, "cache_salt"),
        session_id=_opt_str(session_id, "session_id"),
        lora_name=_opt_str(lora_name, "lora_name"),
    )


def _event(e: _PosStored | _PosRemoved | _PosCleared | _MapStored | _MapRemoved | _MapCleared) -> KVEvent:
    if isinstance(e, _PosStored):
        return _stored(e, e.metadata.cache_salt if e.metadata else None, None, None)
    if isinstance(e, _MapStored):
        return _stored(e, e.cache_salt, e.session_id, e.lora_name)
    if isinstance(e, _PosRemoved | _MapRemoved):
        hashes = _int64s(e.block_hashes, "block_hashes")
        return BlockRemoved(block_hashes=hashes, medium=_opt_str(e.medium, "medium"))
    return AllBlocksCleared()


def decode_batch(payload: bytes) -> KVEventBatch:
    """Decode one batch in the shape any supported release publishes. Raises :class:`KVEventDecodeError`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise KVEventDecodeError(f"KV event payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    raw: _PosBatch | _MapBatch
    try:
        raw = _positional.decode(payload)  # up to 0.5.19
    except msgspec.DecodeError as positional_error:
        try:
            raw = _tagged_map.decode(payload)  # 0.5.20+
        except msgspec.DecodeError as map_error:
            why = _which(payload, positional_error, map_error)
            raise KVEventDecodeError(f"not a KV event batch: {why}") from None
    if len(raw.events) > MAX_EVENTS_PER_BATCH:
        raise KVEventDecodeError(f"batch of {len(raw.events)} events exceeds {MAX_EVENTS_PER_BATCH}")
    if not math.isfinite(raw.ts):
        raise KVEventDecodeError("batch ts is not finite")
    if raw.attn_dp_rank is not None and not 0 <= raw.attn_dp_rank < MAX_DP_RANK:
        raise KVEventDecodeError(f"attn_dp_rank {raw.attn_dp_rank} outside 0..{MAX_DP_RANK - 1}")
    return KVEventBatch(ts=raw.ts, events=[_event(e) for e in raw.events], attn_dp_rank=raw.attn_dp_rank)


_POSITIONAL_FIELDS = {c.__struct_config__.tag: c.__struct_fields__ for c in (_PosStored, _PosRemoved)}
_BATCH_POSITION = re.compile(r"at `\$\[(0|2)\]`")
_EVENT_POSITION = re.compile(r"\$\[1\]\[(\d+)\]\[(\d+)\]")


def _which(payload: bytes, positional_error: Exception, map_error: Exception) -> str:
    """The error for the shape the payload's first event has, with positions named by field."""
    message = str(positional_error)
    events: Any = None
    try:
        events = msgspec.msgpack.decode(payload)[1]
        if isinstance(events[0], dict):
            message = str(map_error)
    except (msgspec.DecodeError, TypeError, IndexError, KeyError):
        pass
    batch_field = _BATCH_POSITION.search(message)
    if batch_field is not None:
        return f"{message} ({_PosBatch.__struct_fields__[int(batch_field.group(1))]})"
    at = _EVENT_POSITION.search(message)
    if at is not None and isinstance(events, list) and int(at.group(1)) < len(events):
        event, index = events[int(at.group(1))], int(at.group(2))
        names = _POSITIONAL_FIELDS.get(event[0]) if isinstance(event, list) and event else None
        if names is not None and 1 <= index <= len(names):
            message += f" ({event[0]}.{names[index - 1]})"
    return message
