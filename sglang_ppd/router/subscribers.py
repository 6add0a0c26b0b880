"""ZMQ subscribers: KV events (with gap replay/resync), WorkerTelemetry and SGLang LoadStat.

Each runs as one asyncio task per socket, owned by the worker it feeds, and is cancelled when the
worker is removed. Every received message is size-bounded (ZMQ_MAXMSGSIZE) and decoded without
pickle; a message that fails to decode or validate, for whatever reason (even a decoder bug), is
dropped and counted per ``feed:reason`` in ``WorkerState.dropped``; it never stops the feed. The
SUB queue is bounded (RCVHWM). A cut subscription (oversized message, dead publisher) is counted and reopened
(:mod:`sglang_ppd.router.zmq_sub`); a cut KV-event subscription also drops that rank's index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from sglang_ppd.protocol import kv_events, load_stat, telemetry
from sglang_ppd.router.kv_sessions import KvSessions
from sglang_ppd.router.prefix_index import ExactPrefixIndex
from sglang_ppd.router.workers import WorkerState
from sglang_ppd.router.zmq_sub import ResilientSub

log = logging.getLogger(__name__)

REPLAY_TIMEOUT_S = 2.0


async def replay(
    ctx: zmq.asyncio.Context, endpoint: str, start_seq: int, end_seq: int
) -> list[kv_events.KVEventBatch] | None:
    """Batches ``start_seq..end_seq`` from SGLang's ROUTER replay socket; ``None`` if not all came."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, kv_events.MAX_PAYLOAD_BYTES + 64)
    got: dict[int, kv_events.KVEventBatch] = {}
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
                break
            if start_seq <= seq <= end_seq:
                got[seq] = kv_events.decode_batch(frames[2])
    except Exception as exc:  # a socket error or any decoder failure: the gap resyncs instead
        log.warning("KV event replay from %s failed: %s", endpoint, exc)
        return None
    finally:
        sock.close()
    if any(s not in got for s in range(start_seq, end_seq + 1)):
        return None
    return [got[s] for s in range(start_seq, end_seq + 1)]


class KvEventConsumer:
    """Applies one rank's batches in sequence order; fills gaps by replay, else resyncs (clears)."""

    def __init__(
        self,
        worker: WorkerState,
        index: ExactPrefixIndex,
        rank: int,
        ctx: zmq.asyncio.Context,
        replay_endpoint: str | None,
        sessions: KvSessions | None = None,
    ) -> None:
        self.worker, self.index, self.rank = worker, index, rank
        self.ctx, self.replay_endpoint = ctx, replay_endpoint
        self.sessions = sessions
        self.last_seq: int | None = None

    async def on_message(self, frames: list[bytes]) -> None:
        w = self.worker
        if len(frames) != 3:
            w.dropped["kv:frames"] += 1
            return
        try:
            seq = kv_events.seq_from_bytes(frames[1])
            batch = kv_events.decode_batch(frames[2])
        except Exception as exc:  # any decoder failure costs this message only
            drop(w, "kv", exc)
            return
        last = self.last_seq
        if last is not None and seq <= last:
            if seq == last:
                return  # duplicate
            # The publisher restarted (seq went back): its cache restarted with it.
            self.index.clear(self.rank)
        elif (last is None and seq > 0) or (last is not None and seq > last + 1):
            first_missing = 0 if last is None else last + 1
            missed = None
            if self.replay_endpoint is not None:
                missed = await replay(self.ctx, self.replay_endpoint, first_missing, seq - 1)
            if missed is not None:
                for b in missed:
                    self._apply(b.events)
            elif last is not None:
                w.num_kv_gaps += 1
                log.warning(
                    "KV event gap from %s (%d..%d lost): resyncing its prefix index",
                    w.name,
                    first_missing,
                    seq - 1,
                )
                self.index.clear(self.rank)
        self._apply(batch.events)
        w.num_kv_events += len(batch.events)
        self.last_seq = seq

    def _apply(self, events: list[kv_events.KVEvent]) -> None:
        if self.sessions is not None:
            for e in events:
                if isinstance(e, kv_events.BlockStored) and e.session_id is not None:
                    self.sessions.saw(e.session_id, self.worker.url)
                elif isinstance(e, kv_events.AllBlocksCleared):
                    self.sessions.forget_worker(self.worker.url)
        rejected = self.index.apply(self.rank, events)
        if rejected:  # hashes that do not match their tokens' chain: never indexed
            self.worker.dropped["kv:bad_block_hash"] += rejected


async def run_kv_events(consumer: KvEventConsumer, endpoint: str, topic: str) -> None:
    count = _on_reset(consumer.worker)

    def reset() -> None:
        # Events were lost, or the worker (and its cache) is gone: drop what we knew at once.
        count()
        consumer.index.clear(consumer.rank)

    sock = ResilientSub(consumer.ctx, endpoint, topic.encode(), kv_events.MAX_PAYLOAD_BYTES + 64, reset)
    try:
        while True:
            await consumer.on_message(await sock.recv_multipart())
    finally:
        sock.close()


async def run_telemetry(ctx: zmq.asyncio.Context, worker: WorkerState, endpoint: str) -> None:
    sock = ResilientSub(ctx, endpoint, telemetry.TOPIC, telemetry.MAX_MESSAGE_BYTES + 64, _on_reset(worker))
    try:
        while True:
            frames = await sock.recv_multipart()
            try:
                if len(frames) != 2:
                    raise ValueError(f"expected 2 frames, got {len(frames)}")
                worker.record_telemetry(telemetry.decode(frames[1]))
            except Exception as exc:
                drop(worker, "telemetry", exc)
    finally:
        sock.close()


async def run_loadstat(
    ctx: zmq.asyncio.Context, worker: WorkerState, endpoints: tuple[str, ...], topic: str
) -> None:
    """Sums the per-rank LoadStat gauges (latest of each rank) into the worker's load."""
    latest: dict[int, load_stat.LoadStat] = {}

    async def rank_loop(rank: int, endpoint: str) -> None:
        sock = ResilientSub(
            ctx, endpoint, topic.encode(), load_stat.MAX_PAYLOAD_BYTES + 64, _on_reset(worker)
        )
        try:
            while True:
                frames = await sock.recv_multipart()
                try:
                    if len(frames) != 3:
                        raise ValueError(f"expected 3 frames, got {len(frames)}")
                    stat = load_stat.decode(frames[2])
                except Exception as exc:
                    drop(worker, "loadstat", exc)
                    continue
                latest[rank] = stat
                worker.record_load(load_stat.summary_from_stats(list(latest.values())), "loadstat")
        finally:
            sock.close()

    await asyncio.gather(*(rank_loop(r, ep) for r, ep in enumerate(endpoints)))


def drop(worker: WorkerState, feed: str, exc: Exception) -> None:
    """Count (and log at debug: a noisy publisher must not flood the log) one dropped message."""
    reason = "malformed" if isinstance(exc, ValueError) else type(exc).__name__
    worker.dropped[f"{feed}:{reason}"] += 1
    log.debug("dropping a %s message from %s: %s", feed, worker.name, exc)


def _on_reset(worker: WorkerState) -> Callable[[], None]:
    def count() -> None:
        worker.num_subscriber_resets += 1

    return count


async def run_task(coro_name: str, worker: WorkerState, coro: object) -> None:
    """Keeps a subscriber's crash in the log instead of losing it in an unobserved task."""
    try:
        await coro  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s for %s stopped", coro_name, worker.name)
