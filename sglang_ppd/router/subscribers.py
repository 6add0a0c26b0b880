"""ZMQ subscribers: KV events (with replay on (re)connect and of gaps, else resync), WorkerTelemetry
and SGLang LoadStat.

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
from collections.abc import Callable

import zmq
import zmq.asyncio

from sglang_ppd.protocol import kv_events, load_stat, telemetry
from sglang_ppd.router.kv_replay import replay_from, replay_range
from sglang_ppd.router.kv_sessions import KvSessions
from sglang_ppd.router.prefix_index import ExactPrefixIndex
from sglang_ppd.router.workers import WorkerState
from sglang_ppd.router.zmq_sub import ResilientSub

log = logging.getLogger(__name__)

class KvEventConsumer:
    """Applies one rank's batches in sequence order; catches up from the replay socket when its
    subscription (re)joins, fills gaps by replay, else resyncs (clears)."""

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
        self._caught_up: dict[int, int] = {}
        """seq -> hash of the payload, of the batches the last catch-up applied: the live copies of
        them the subscription may still deliver are duplicates, not a publisher that restarted."""

    async def catch_up(self) -> None:
        """The subscription (re)joined: apply what the worker published since ``last_seq`` (all it
        buffers, for a new subscription) from its replay socket, when it offers one. PUB/SUB
        delivers nothing published before the subscription took effect, so the worker's last batch
        would otherwise stay unknown until a later one revealed the gap."""
        if self.replay_endpoint is None:
            return
        start = 0 if self.last_seq is None else self.last_seq + 1
        got = await replay_from(self.ctx, self.replay_endpoint, start) or {}
        self._caught_up = {}
        for seq, payload in sorted(got.items()):
            batch = self._decode(payload)
            if batch is None:
                break  # the rest would not follow on: a later live batch reveals the gap
            if self.last_seq is not None and seq != self.last_seq + 1:
                self._gap(self.last_seq + 1, seq - 1)
            self._apply(batch.events)
            self.worker.num_kv_events += len(batch.events)
            self.last_seq = seq
            self._caught_up[seq] = hash(payload)

    def forget(self) -> None:
        """The subscription was cut: this rank's index is cleared and rebuilt from what comes next."""
        self.index.clear(self.rank)
        self.last_seq = None
        self._caught_up = {}

    def _decode(self, payload: bytes) -> kv_events.KVEventBatch | None:
        try:
            return kv_events.decode_batch(payload)
        except Exception as exc:  # any decoder failure costs this message only
            drop(self.worker, "kv", exc)
            return None

    def _gap(self, first_missing: int, last_missing: int) -> None:
        self.worker.num_kv_gaps += 1
        log.warning(
            "KV event gap from %s (%d..%d lost): resyncing its prefix index",
            self.worker.name,
            first_missing,
            last_missing,
        )
        self.index.clear(self.rank)

    async def on_message(self, frames: list[bytes]) -> None:
        w = self.worker
        if len(frames) != 3:
            w.dropped["kv:frames"] += 1
            return
        try:
            seq = kv_events.seq_from_bytes(frames[1])
        except Exception as exc:
            drop(w, "kv", exc)
            return
        if self._caught_up:
            if self._caught_up.get(seq) == hash(frames[2]):
                return  # already applied by the catch-up
            if seq > max(self._caught_up):
                self._caught_up = {}  # the live stream is past the catch-up: no copy follows
        batch = self._decode(frames[2])
        if batch is None:
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
                missed = await replay_range(self.ctx, self.replay_endpoint, first_missing, seq - 1)
            if missed is not None:
                for b in missed:
                    self._apply(b.events)
            elif last is not None:
                self._gap(first_missing, seq - 1)
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
        consumer.forget()

    max_bytes = kv_events.MAX_PAYLOAD_BYTES + 64
    sock = ResilientSub(consumer.ctx, endpoint, topic.encode(), max_bytes, reset, consumer.catch_up)
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
