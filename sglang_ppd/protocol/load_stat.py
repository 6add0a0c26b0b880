"""SGLang's load reports: the ``LoadStat`` PUB gauge and the ``/v1/loads`` JSON.

``LoadStat`` (SGLang's ``managers/scheduler_components/load_publisher.py``; absent in 0.5.17 and
0.5.18; enabled with ``--load-publish-endpoint``): each scheduler PUBs ``[b"load", seq (8-byte
big-endian), msgpack]`` with the KV-event framing, where the payload is a tagged positional array:

- 0.5.19, 5 fields: ``["LoadStat", num_running_reqs, num_waiting_reqs, num_tokens,
  max_total_num_tokens, attn_dp_rank]``;
- 0.5.20+, 10 fields: the same, then ``num_waiting_uncached_tokens, num_total_tokens,
  max_running_requests, total_prefill_uncached_tokens, total_prefill_busy_us``.

The port is advertised in ``/server_info``'s ``kv_events`` block as ``load_endpoint_port_base`` and
the topic as ``load_topic`` (see :mod:`sglang_ppd.protocol.server_info`). Goldens of both shapes,
from each release's own class: ``tests/goldens/``. Payloads are untrusted: every count is range-checked.

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
MAX_COUNT = 1 << 53
"""Above any real count (and exact in a float); cumulative microsecond counters stay far below it."""
MAX_DP_RANK = 1 << 16


class LoadStat(msgspec.Struct, array_like=True, gc=False, tag=True):  # type: ignore[call-arg]
    num_running_reqs: int
    num_waiting_reqs: int
    num_tokens: int
    """KV tokens in use."""
    max_total_num_tokens: int
    """KV capacity; 0 when unknown."""
    attn_dp_rank: int | None = None
    # 0.5.20+; None in a 5-field (0.5.19) stat.
    num_waiting_uncached_tokens: int | None = None
    """Uncached prompt tokens awaiting prefill."""
    num_total_tokens: int | None = None
    max_running_requests: int | None = None
    total_prefill_uncached_tokens: int | None = None
    """Cumulative."""
    total_prefill_busy_us: int | None = None
    """Cumulative prefill step time."""


_COUNTS = tuple(f for f in LoadStat.__struct_fields__ if f != "attn_dp_rank")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LoadStat)


def encode_message(seq: int, stat: LoadStat, topic: str = LOAD_TOPIC) -> list[bytes]:
    """The frames a release sends: 0.5.19's 5-field shape when the newer fields are unset, else 0.5.20's."""
    fields = [getattr(stat, f) for f in LoadStat.__struct_fields__]
    shape = fields if stat.num_waiting_uncached_tokens is not None else fields[:5]
    return [topic.encode(), seq.to_bytes(8, "big", signed=True), _encoder.encode(["LoadStat", *shape])]


def decode(payload: bytes) -> LoadStat:
    """Raises ``ValueError`` on oversized, malformed or out-of-range payloads (dropped and counted by
    the caller)."""
    stat = decode_bounded(_decoder, payload, MAX_PAYLOAD_BYTES, "LoadStat payload")
    for name in _COUNTS:
        value = getattr(stat, name)
        if value is not None and not 0 <= value <= MAX_COUNT:
            raise ValueError(f"LoadStat {name} {value} outside 0..{MAX_COUNT}")
    if stat.attn_dp_rank is not None and not 0 <= stat.attn_dp_rank < MAX_DP_RANK:
        raise ValueError(f"LoadStat attn_dp_rank {stat.attn_dp_rank} outside 0..{MAX_DP_RANK - 1}")
    return stat


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """One worker's load summed over its DP ranks, from either source."""

    num_running: int
    num_waiting: int
    kv_used_tokens: int
    kv_capacity_tokens: int | None
    queued_prefill_tokens: int | None = None


def summary_from_stats(stats: list[LoadStat]) -> LoadSummary:
    """One worker's latest stat per DP rank, summed. Queued prefill tokens only when every rank
    reports them (10-field stats)."""
    queued = [s.num_waiting_uncached_tokens for s in stats]
    known = [q for q in queued if q is not None]
    return LoadSummary(
        num_running=sum(s.num_running_reqs for s in stats),
        num_waiting=sum(s.num_waiting_reqs for s in stats),
        kv_used_tokens=sum(s.num_tokens for s in stats),
        kv_capacity_tokens=sum(s.max_total_num_tokens for s in stats) or None,
        queued_prefill_tokens=sum(known) if known and len(known) == len(queued) else None,
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
