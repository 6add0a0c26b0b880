"""Exact prefix lengths driven by real ZMQ KV events: store, evict, clear, sequence gaps (with and
without replay), and the approximate index for workers without events."""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiohttp
import msgspec
import pytest
import zmq.asyncio
from test_router_support import FakeKvPublisher, FakeWorker, ScriptedPolicy, start_router, wait_for

from sglang_ppd.core.types import Role
from sglang_ppd.emulator.publishers import KvEventPublisher
from sglang_ppd.protocol import block_hash, kv_events
from sglang_ppd.protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from sglang_ppd.router.prefix_index import BlockTable, ExactPrefixIndex
from sglang_ppd.router.subscribers import KvEventConsumer
from sglang_ppd.router.workers import WorkerState

pytestmark = pytest.mark.timeout(30)
PAGE = 4
PROMPT = list(b"hello world!")  # 12 tokens = 3 pages


def stored(
    tokens: list[int], parent: int | None = None, page: int = PAGE, medium: str | None = "GPU"
) -> list[BlockStored]:
    """One ``BlockStored`` per full page of ``tokens``, chained by SGLang's page hashes."""
    hashes = block_hash.page_hashes(tokens, page)
    out, prev = [], parent
    for i, h in enumerate(hashes):
        out.append(
            BlockStored(
                block_hashes=[h],
                parent_block_hash=prev,
                token_ids=tokens[i * page : (i + 1) * page],
                block_size=page,
                lora_id=None,
                medium=medium,
            )
        )
        prev = h
    return out


@contextlib.asynccontextmanager
async def _cluster(with_replay: bool):  # type: ignore[no-untyped-def]
    """A P and a KV-event-publishing D behind a router: (pub, p, d, policy, router, url, w)."""
    pub = FakeKvPublisher(with_replay)
    p = await FakeWorker("prefill").start()
    d = await FakeWorker(
        "decode",
        server_info={"ppd_local_prefill": True, "page_size": PAGE, "kv_events": pub.kv_events_block(PAGE)},
    ).start()
    policy = ScriptedPolicy()
    router, runner, url = await start_router([p, d], policy)
    try:
        w = router.registry.get(d.url)
        assert w is not None and w.exact_index is not None
        yield pub, p, d, policy, router, url, w
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
        pub.close()


def cached(router, url: str) -> int:  # type: ignore[no-untyped-def]
    return router.features("r", PROMPT, 4, None, None).cached_len.get(url, 0)


async def test_kv_events_drive_hit_lengths_and_eviction_and_local_route() -> None:
    async with _cluster(with_replay=False) as (pub, p, d, policy, router, url, w):
        await pub.publish(stored(PROMPT[:8]))  # two pages
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        assert cached(router, d.url) == 8
        third = stored(PROMPT, None)[2]
        await pub.publish([third])
        await wait_for(lambda: cached(router, d.url) == 12)
        feats = router.features("r", PROMPT, 4, None, None)
        assert feats.hit_len(d.url) == 11 and d.url not in feats.approx_workers

        policy.local_min_hit = 8
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{url}/generate", json={"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 2}}
            ) as r,
        ):
            assert r.headers["x-ppd-route"] == "local"
        assert policy.seen[-1][0].cached_len[d.url] == 12

        await pub.publish([BlockRemoved(block_hashes=[third.block_hashes[0]])])  # eviction of the leaf
        await wait_for(lambda: cached(router, d.url) == 8)
        async with aiohttp.ClientSession() as s, s.get(f"{url}/stats") as r:
            assert (await r.json())["prefix_table_blocks"] == 2
        # An older SGLang array shape (no medium, no dp rank) is understood too.
        older = msgspec.msgpack.encode(
            [1.0, [["BlockStored", third.block_hashes, third.parent_block_hash, PROMPT[8:], PAGE, None]]]
        )
        await pub.publish([], raw=older)
        await wait_for(lambda: cached(router, d.url) == 12)
        await pub.publish([AllBlocksCleared()])
        await wait_for(lambda: cached(router, d.url) == 0)
        assert w.num_kv_gaps == 0 and router.prefix.num_table_blocks() == 0


async def test_seq_gap_without_replay_resyncs_by_clearing() -> None:
    async with _cluster(with_replay=False) as (pub, p, d, policy, router, url, w):
        pages = stored(PROMPT)
        await pub.publish(pages[:2])
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        assert cached(router, d.url) == 8
        await pub.publish([BlockRemoved(block_hashes=pages[1].block_hashes)], drop=True)  # lost
        await pub.publish([pages[2]])
        await wait_for(lambda: w.num_kv_gaps == 1)
        # Only what arrived after the gap is trusted: page 3 alone is no prefix, and its parent is
        # no longer known, so its hash cannot be checked: it is not indexed (under-counting is the
        # accepted failure mode).
        assert cached(router, d.url) == 0 and w.dropped["kv:bad_block_hash"] == 1
        await pub.publish(pages[:2])
        await wait_for(lambda: cached(router, d.url) == 8)


async def test_seq_gap_is_filled_from_the_replay_socket() -> None:
    async with _cluster(with_replay=True) as (pub, p, d, policy, router, url, w):
        pages = stored(PROMPT)
        await pub.publish(pages[:1])
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        await pub.publish(pages[1:2], drop=True)  # lost on PUB, kept for replay
        await pub.publish(pages[2:])
        await wait_for(lambda: cached(router, d.url) == 12)
        assert w.num_kv_gaps == 0


async def test_garbage_kv_message_is_dropped_and_counted() -> None:
    async with _cluster(with_replay=False) as (pub, p, d, policy, router, url, w):
        await pub.publish(stored(PROMPT[:4]))
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        await pub.pub.send_multipart([b"", (1).to_bytes(8, "big"), b"\xc1garbage"])
        await wait_for(lambda: w.num_dropped_messages == 1)
        assert cached(router, d.url) == 4


async def test_workers_without_kv_events_get_an_approximate_index() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    policy = ScriptedPolicy()
    router, runner, url = await start_router([p, d], policy, approx_page_size=4)
    prompt = list(range(40, 60))
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(2):
                async with s.post(f"{url}/generate", json={"input_ids": prompt}) as r:
                    assert r.status == 200
        first, second = policy.seen[0][0], policy.seen[1][0]
        assert first.cached_len == {}
        assert second.cached_len[d.url] == 20 and d.url in second.approx_workers
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


@pytest.mark.parametrize("page", [1, 4])
def test_block_table_resolves_sglang_hashes_from_events_and_refcounts(page: int) -> None:
    tokens = list(range(100, 116))
    hashes = block_hash.page_hashes(tokens, page)
    events = stored(tokens, page=page, medium=None)
    table = BlockTable(page)
    a, b = ExactPrefixIndex(table), ExactPrefixIndex(table)
    a.apply(0, events)
    b.apply(0, events[:2])
    # The table reproduces SGLang's chain without hashing, for the pages some worker holds.
    assert table.resolve(tokens + [7]) == hashes == block_hash.full_page_hashes(tokens, page)
    assert a.hit_len(table.resolve(tokens)) == 16 and b.hit_len(table.resolve(tokens)) == 2 * page
    assert table.resolve([5] + tokens) == []
    a.apply(0, [BlockRemoved(block_hashes=hashes[1:])])
    assert table.resolve(tokens) == hashes[:2]  # b still holds the first two pages
    a.apply(0, [AllBlocksCleared()])
    assert table.resolve(tokens) == hashes[:2] and a.num_blocks() == 0
    b.clear()
    assert table.resolve(tokens) == [] and len(table) == 0


def test_the_block_table_holds_exactly_what_some_worker_holds_under_churn() -> None:
    """The shared table is the mirror's memory: under a long mix of stores (shared prefixes, chains
    extended from a parent) and evictions on three workers, it must hold every chain some worker
    holds and forget each block, and the entry it hangs from, once no worker holds it."""
    rng = random.Random(0)
    table = BlockTable(1)
    workers = [ExactPrefixIndex(table) for _ in range(3)]
    system = [rng.randrange(1000) for _ in range(8)]  # a prefix every chain shares
    chains = [system + [rng.randrange(1000) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    held: list[dict[int, int]] = [{} for _ in workers]  # worker -> chain -> pages held
    for _ in range(3000):
        w, c = rng.randrange(3), rng.randrange(len(chains))
        tokens, n = chains[c], held[w].get(c, 0)
        if n < len(tokens) and rng.random() < 0.6:
            upto = rng.randint(n + 1, len(tokens))
            hashes = block_hash.page_hashes(tokens[:upto], 1)
            parent = hashes[n - 1] if n else None
            event = BlockStored(hashes[n:], parent, tokens[n:upto], 1, None)
            assert workers[w].apply(0, [event]) == 0
            held[w][c] = upto
        elif n:  # evict from the leaf end, as a radix cache does; pages another chain uses stay
            keep = rng.randint(0, n - 1)
            others = {
                h for o, m in held[w].items() if o != c for h in block_hash.page_hashes(chains[o][:m], 1)
            }
            gone = [h for h in block_hash.page_hashes(tokens[:n], 1)[keep:] if h not in others]
            workers[w].apply(0, [BlockRemoved(block_hashes=gone)])
            held[w][c] = keep
    for w, chains_held in enumerate(held):
        for c, n in chains_held.items():
            assert workers[w].hit_len(table.resolve(chains[c])) >= n
    for index in workers:
        index.clear()
    assert len(table) == 0 and table.resolve(chains[0]) == []
    assert not table._children  # no entry left behind for a block nobody holds


@contextlib.asynccontextmanager
async def _emulated_publisher():  # type: ignore[no-untyped-def]
    """The emulator's KV-event publisher (PUB + ROUTER replay) on loopback."""
    ctx = zmq.asyncio.Context()
    pub = KvEventPublisher(ctx, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    pub.start()
    try:
        yield pub
    finally:
        await pub.close()
        ctx.destroy(linger=0)


def _kv_block(pub: KvEventPublisher) -> dict[str, object]:
    return {"publisher": "zmq", "endpoint_host": "127.0.0.1", "endpoint_port_base": pub.port,
            "replay_endpoint_port_base": pub.replay_port, "topic": "", "block_size": PAGE}  # fmt: skip


@pytest.mark.slow
async def test_a_subscriber_gets_what_was_published_before_it_joined_and_after_a_cut() -> None:
    """A worker's last batch, published before the router subscribed, is indexed with no later
    batch (from the replay socket); so is everything again after the subscription is cut."""
    async with _emulated_publisher() as pub:
        pub.publish(stored(PROMPT[:8]))  # nobody subscribes yet: lost on PUB, kept for replay
        d = await FakeWorker(
            "decode", server_info={"ppd_local_prefill": True, "page_size": PAGE, "kv_events": _kv_block(pub)}
        ).start()
        router, runner, _ = await start_router([d], ScriptedPolicy())
        try:
            w = router.registry.get(d.url)
            assert w is not None
            await wait_for(lambda: cached(router, d.url) == 8, timeout_s=10)
            oversized = b"x" * (kv_events.MAX_PAYLOAD_BYTES + 1024)  # libzmq cuts the subscription
            while w.num_subscriber_resets == 0:  # sent past the publisher's buffer, on its PUB socket
                pub._pub.send_multipart([b"", kv_events.seq_to_bytes(pub.seq), oversized])
                await asyncio.sleep(0.1)
            await wait_for(lambda: cached(router, d.url) == 8, timeout_s=10)  # cleared, then rebuilt
            assert w.num_kv_gaps == 0
        finally:
            await runner.cleanup()
            await d.stop()


async def test_live_copies_of_caught_up_batches_are_not_a_publisher_restart() -> None:
    """The subscription may deliver batches the catch-up already applied (published after it joined
    but before the replay answered): seq goes back, yet only a different batch is a restart."""
    async with _emulated_publisher() as pub:
        pages = stored(PROMPT)
        pub.publish(pages[:1])
        pub.publish(pages[1:2])
        worker = WorkerState(url="http://d0:1", role=Role.DECODE)
        index = ExactPrefixIndex(BlockTable(PAGE))
        ctx = zmq.asyncio.Context()
        try:
            consumer = KvEventConsumer(worker, index, 0, ctx, f"tcp://127.0.0.1:{pub.replay_port}")
            await consumer.catch_up()
            assert cached_on(index) == 8 and consumer.last_seq == 1
            seq0, payload0 = pub._buffer[0]  # what the PUB socket sent as batch 0
            await consumer.on_message([b"", kv_events.seq_to_bytes(seq0), payload0])  # its live copy
            assert cached_on(index) == 8
            batch2 = kv_events.KVEventBatch(ts=0.0, events=list(pages[2:]))
            await consumer.on_message(list(kv_events.encode_message("", 2, batch2)))
            assert cached_on(index) == 12
            other0 = kv_events.KVEventBatch(ts=0.0, events=list(pages[:1]))  # not the batch 0 sent
            await consumer.on_message(list(kv_events.encode_message("", 0, other0)))  # a restart
            assert index.num_blocks() == 1 and cached_on(index) == 4  # only the new worker's batch
            assert worker.num_kv_gaps == 0
        finally:
            ctx.destroy(linger=0)


def cached_on(index: ExactPrefixIndex) -> int:
    return index.hit_len(index.table.resolve(PROMPT))
