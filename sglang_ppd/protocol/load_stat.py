"""SGLang's load reports: the ``LoadStat`` PUB gauge and the ``/v1/loads`` JSON.

``LoadStat`` (SGLang's ``scheduler_components/load_publisher.py``, newer than 0.5.17, enabled with
``--load-publish-endpoint``): each scheduler PUBs ``[b"load", seq (8-byte big-endian), msgpack]``
with the KV-event framing, where the payload is a tagged array
``["LoadStat", num_running_reqs, num_waiting_reqs, num_tokens, max_total_num_tokens, attn_dp_rank]``.
The port is advertised in ``/server_info``'s ``kv_events`` block as ``load_endpoint_port_base`` and
the topic as ``load_topic`` (see :mod:`sglang_ppd.protocol.server_info`).

``/v1/loads`` (sglang 0.5.17 ``entrypoints/v1_loads.py``): ``{"timestamp", "version", "loads":
[{dp_rank, num_running_reqs, num_waiting_reqs, num_waiting_uncached_tokens, num_used_tokens,
num_total_tokens, max_total_num_tokens, ...}, ...]}``, one entry per DP rank. The router polls it
when a worker publishes neither LoadStat nor our ``WorkerTelemetry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sglang_ppd.protocol.bounded import decode_bounded

LOAD_TOPIC = "load"
MAX_PAYLOAD_BYTES = 4096


class LoadStat(msgspec.Struct, array_like=True, gc=False, tag=True):  # type: ignore[call-arg]
    num_running_reqs: int
    num_waiting_reqs: int
    num_tokens: int
    """KV tokens in use."""
    max_total_num_tokens: int
    """KV capacity; 0 when unknown."""
    attn_dp_rank: int | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LoadStat)


def encode_message(seq: int, stat: LoadStat, topic: str = LOAD_TOPIC) -> list[bytes]:
    return [topic.encode(), seq.to_bytes(8, "big", signed=True), _encoder.encode(stat)]


def decode(payload: bytes) -> LoadStat:
    """Raises ``ValueError`` on oversized or malformed payloads (dropped and counted by the caller)."""
    return decode_bounded(_decoder, payload, MAX_PAYLOAD_BYTES, "LoadStat payload")


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """One worker's load summed over its DP ranks, from either source."""

    num_running: int
    num_waiting: int
    kv_used_tokens: int
    kv_capacity_tokens: int | None
    queued_prefill_tokens: int | None = None


def summary_from_stat(stat: LoadStat) -> LoadSummary:
    return LoadSummary(
        num_running=stat.num_running_reqs,
        num_waiting=stat.num_waiting_reqs,
        kv_used_tokens=stat.num_tokens,
        kv_capacity_tokens=stat.max_total_num_tokens or None,
    )


def _int(entry: dict[str, Any], key: str) -> int:
    value = entry.get(key, 0)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"/v1/loads field {key!r} is not a number")
    return int(value)


def summary_from_loads_json(body: Any) -> LoadSummary:
    """Sum ``/v1/loads``' per-rank entries. Raises ``ValueError`` on an unexpected shape."""
    if not isinstance(body, dict) or not isinstance(body.get("loads"), list) or not body["loads"]:
        raise ValueError("/v1/loads reply has no 'loads' list")
    running = waiting = used = capacity = queued = 0
    for entry in body["loads"]:
        if not isinstance(entry, dict):
            raise ValueError("/v1/loads entries must be objects")
        running += _int(entry, "num_running_reqs")
        waiting += _int(entry, "num_waiting_reqs")
        used += _int(entry, "num_used_tokens")
        capacity += _int(entry, "max_total_num_tokens")
        queued += _int(entry, "num_waiting_uncached_tokens")
    return LoadSummary(running, waiting, used, capacity or None, queued)
