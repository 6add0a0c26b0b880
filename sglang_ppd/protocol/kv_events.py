"""SGLang's KV-cache event wire format (sglang 0.5.17 ``srt/disaggregation/kv_events.py``).

Transport: the worker's ``ZmqEventPublisher`` PUB socket sends multipart
``[topic, seq (8-byte big-endian), msgpack(KVEventBatch)]``; ``seq`` counts batches from 0 and a
gap means lost batches. An optional ROUTER replay socket answers a request ``[b"", start_seq as
8-byte big-endian]`` (sent from a DEALER; SGLang's ROUTER sees ``[identity, b"", start]``) with
``[b"", seq, payload]`` frames for every buffered batch ``>= start`` and then an end marker whose
seq is ``-1`` and payload empty.

Payload shapes. SGLang's structs are ``array_like`` and tagged, so a batch is
``[ts, [event, ...], attn_dp_rank]`` and an event ``["BlockStored", block_hashes, parent_block_hash,
token_ids, block_size, lora_id, medium]``. Older releases omit ``attn_dp_rank`` and ``medium``; the
map ("tagged-map") shape ``{"ts":..., "events": [{"type": "BlockStored", ...}]}`` is accepted too.
:func:`decode_batch` accepts all of them, bounds the payload size, and never unpickles anything.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 1_000_000
END_SEQ = -1


class EventBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    attn_dp_rank: int | None = None


class KVCacheEvent(msgspec.Struct, array_like=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base class of the three events; the tag is the class name, as in SGLang."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = None


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


_encoder = msgspec.msgpack.Encoder()
_typed_decoder = msgspec.msgpack.Decoder(KVEventBatch)


def encode_batch(batch: KVEventBatch) -> bytes:
    return _encoder.encode(batch)


def seq_to_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


def seq_from_bytes(raw: bytes) -> int:
    if len(raw) != 8:
        raise KVEventDecodeError(f"sequence frame must be 8 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big", signed=True)


def encode_message(topic: str, seq: int, batch: KVEventBatch) -> list[bytes]:
    """The three PUB frames SGLang sends for one batch."""
    return [topic.encode(), seq_to_bytes(seq), encode_batch(batch)]


def _as_hash(value: Any) -> int:
    if isinstance(value, bool):
        raise KVEventDecodeError("block hash must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) >= 8:
        return int.from_bytes(bytes(value[:8]), "big", signed=True)
    raise KVEventDecodeError(f"block hash must be an int64, got {type(value).__name__}")


def _hashes(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise KVEventDecodeError("block_hashes must be a list")
    return [_as_hash(v) for v in value]


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list):
        raise KVEventDecodeError(f"{name} must be a list")
    out: list[int] = []
    for v in value:
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif isinstance(v, list) and v and isinstance(v[0], int):
            out.append(v[0])  # bigram pages publish (token, next) pairs; the first is the token
        else:
            raise KVEventDecodeError(f"{name} must hold integers")
    return out


def _opt_int(value: Any) -> int | None:
    return None if value is None else _as_hash(value)


_FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}


def _event(raw: Any) -> KVEvent:
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        tag, values = raw[0], raw[1:]
        names = _FIELDS.get(tag)
        if names is None:
            raise KVEventDecodeError(f"unknown event tag {tag!r}")
        fields = dict(zip(names, values, strict=False))
    elif isinstance(raw, dict):
        map_tag = raw.get("type")
        if not isinstance(map_tag, str) or map_tag not in _FIELDS:
            raise KVEventDecodeError(f"unknown event tag {map_tag!r}")
        tag, fields = map_tag, raw
    else:
        raise KVEventDecodeError("event must be a tagged array or a map with a 'type' key")
    try:
        if tag == "BlockStored":
            medium = fields.get("medium")
            return BlockStored(
                block_hashes=_hashes(fields["block_hashes"]),
                parent_block_hash=_opt_int(fields.get("parent_block_hash")),
                token_ids=_int_list(fields.get("token_ids", []), "token_ids"),
                block_size=int(fields.get("block_size") or 0),
                lora_id=_opt_int(fields.get("lora_id")),
                medium=medium if isinstance(medium, str) else None,
            )
        if tag == "BlockRemoved":
            medium = fields.get("medium")
            return BlockRemoved(
                block_hashes=_hashes(fields["block_hashes"]),
                medium=medium if isinstance(medium, str) else None,
            )
    except (KeyError, TypeError) as exc:
        raise KVEventDecodeError(f"malformed {tag} event: {exc}") from None
    return AllBlocksCleared()


def decode_batch(payload: bytes) -> KVEventBatch:
    """Decode one batch in any shape SGLang has published. Raises :class:`KVEventDecodeError`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise KVEventDecodeError(f"KV event payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        # Fast path, C speed: the array shapes SGLang publishes (older ones lack trailing fields).
        batch: KVEventBatch = _typed_decoder.decode(payload)
    except msgspec.DecodeError:
        pass
    else:
        if len(batch.events) > MAX_EVENTS_PER_BATCH:
            raise KVEventDecodeError(f"batch of {len(batch.events)} events exceeds {MAX_EVENTS_PER_BATCH}")
        return batch
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise KVEventDecodeError(f"not msgpack: {exc}") from None
    if isinstance(raw, list) and len(raw) >= 2:
        ts, events, dp_rank = raw[0], raw[1], raw[2] if len(raw) > 2 else None
    elif isinstance(raw, dict):
        ts, events, dp_rank = raw.get("ts", 0.0), raw.get("events"), raw.get("attn_dp_rank")
    else:
        raise KVEventDecodeError("batch must be [ts, events, ...] or a map with 'events'")
    if not isinstance(events, list):
        raise KVEventDecodeError("batch events must be a list")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise KVEventDecodeError(f"batch of {len(events)} events exceeds {MAX_EVENTS_PER_BATCH}")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise KVEventDecodeError("batch ts must be a number")
    return KVEventBatch(
        ts=float(ts),
        events=[_event(e) for e in events],
        attn_dp_rank=dp_rank if isinstance(dp_rank, int) and not isinstance(dp_rank, bool) else None,
    )
