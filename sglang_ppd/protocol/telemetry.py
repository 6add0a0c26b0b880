"""The load snapshot a PPD-capable worker (or an emulated one) publishes over ZMQ PUB.

Wire: a two-frame multipart message ``[b"ppd.telemetry", msgpack(WorkerTelemetry)]`` every
``period_ms`` and on change. msgpack via msgspec; never pickle. The router stamps the receive time
with its own clock and reports ``age_ms`` from that, so no cross-host clock sync is needed.
"""

from __future__ import annotations

import msgspec

from sglang_ppd.protocol.bounded import decode_bounded

TOPIC = b"ppd.telemetry"
MAX_MESSAGE_BYTES = 64 * 1024


class WorkerTelemetry(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    worker_url: str
    role: str
    """"prefill" or "decode"."""
    seq: int
    num_running: int
    num_waiting: int
    queued_prefill_tokens: int
    """Prompt tokens waiting to be prefilled (transfer-preallocs excluded)."""
    kv_used_tokens: int
    kv_capacity_tokens: int
    running_context_tokens: int = 0
    num_local_prefills: int = 0
    """Local/deflected prefills admitted and not yet finished prefilling."""
    queued_local_prefill_tokens: int = 0
    decode_iter_ms: float | None = None
    """EWMA of decode-only iteration time."""
    mixed_iter_ms: float | None = None
    """EWMA of iterations that mixed prefill chunks into decode."""
    tbt_headroom_ms: float | None = None
    """TBT SLO minus the current decode iteration time, when the worker knows its SLO."""
    tbt_budget_ms: float | None = None
    """The worker's TBT SLO (``--ppd-tbt-slo-ms``), when it has one: routers keep local work within it."""
    supports_local_prefill: bool = False


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WorkerTelemetry)


def encode(t: WorkerTelemetry) -> list[bytes]:
    return [TOPIC, _encoder.encode(t)]


def decode(payload: bytes) -> WorkerTelemetry:
    """Raises ``ValueError`` on oversized or malformed payloads (the caller drops and counts them)."""
    return decode_bounded(_decoder, payload, MAX_MESSAGE_BYTES, "telemetry message")
