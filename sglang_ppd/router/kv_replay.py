"""The client of SGLang's KV-event replay socket (a ROUTER beside the PUB, ``kv_events.py``).

A DEALER sends ``[b"", start_seq]``; the worker answers every batch it still buffers from
``start_seq`` on, as ``[b"", seq, payload]``, then an end marker (seq ``-1``). Two uses: a gap in the
live sequence is filled from it (:func:`replay_range`), and a subscription that (re)joins asks it
for what was published before it joined (:func:`replay_from`): PUB/SUB delivers nothing sent before
the subscription took effect, so a worker's last batch would otherwise stay unknown until a later
one revealed the gap.
"""

from __future__ import annotations

import logging
import time

import zmq
import zmq.asyncio

from sglang_ppd.protocol import kv_events

log = logging.getLogger(__name__)
REPLAY_TIMEOUT_S = 2.0


async def replay_from(ctx: zmq.asyncio.Context, endpoint: str, start_seq: int) -> dict[int, bytes] | None:
    """Every buffered batch from ``start_seq`` on, as raw payloads by seq (not decoded: the caller
    drops what does not decode): up to the end marker, or what came within ``REPLAY_TIMEOUT_S``.
    ``None`` when the socket fails."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, kv_events.MAX_PAYLOAD_BYTES + 64)
    got: dict[int, bytes] = {}
    try:
        sock.connect(endpoint)
        await sock.send_multipart([b"", kv_events.seq_to_bytes(start_seq)])
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            if not await sock.poll(int(left * 1000)):
                break
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                continue
            seq = kv_events.seq_from_bytes(frames[1])
            if seq == kv_events.END_SEQ:
                return got
            if seq >= start_seq:
                got[seq] = frames[2]
    except Exception as exc:  # a socket error or a bad seq frame: the caller goes on without
        log.warning("KV event replay from %s failed: %s", endpoint, exc)
        return None
    finally:
        sock.close()
    log.debug("KV event replay from %s did not end within %g s", endpoint, REPLAY_TIMEOUT_S)
    return got


async def replay_range(
    ctx: zmq.asyncio.Context, endpoint: str, start_seq: int, end_seq: int
) -> list[kv_events.KVEventBatch] | None:
    """Batches ``start_seq..end_seq``, decoded; ``None`` unless every one came and decoded."""
    got = await replay_from(ctx, endpoint, start_seq)
    if got is None or any(s not in got for s in range(start_seq, end_seq + 1)):
        return None
    try:
        return [kv_events.decode_batch(got[s]) for s in range(start_seq, end_seq + 1)]
    except Exception as exc:  # any decoder failure: the gap resyncs instead
        log.warning("KV event replay from %s: a batch did not decode: %s", endpoint, exc)
        return None
