"""Emulated SGLang workers speak the protocol: PD bootstrap by room, local prefill, KV events with
replay, LoadStat and telemetry, SGLang SSE and OpenAI shapes. Real subprocesses on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
import zmq
import zmq.asyncio

from sglang_ppd.emulator import tokens
from sglang_ppd.protocol import kv_events, load_stat, server_info, telemetry
from sglang_ppd.protocol.block_hash import full_page_hashes

pytestmark = pytest.mark.timeout(60)
PAGE = 4


@pytest.fixture(scope="module")
def pd_pair(emulated_worker):
    p = emulated_worker("prefill", "--page-size", str(PAGE))
    d = emulated_worker("decode", "--ppd", "--page-size", str(PAGE), "--kv-capacity-tokens", "4096")
    return p, d


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.json(content_type=None)


def subscribe(ctx: zmq.asyncio.Context, endpoint: str) -> zmq.asyncio.Socket:
    """A SUB socket on every topic of ``endpoint``."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


async def stream(url: str, body: dict[str, Any]) -> list[bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, json={**body, "stream": True}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        return [line.rstrip(b"\n") async for line in r.content if line.strip()]


async def info(url: str) -> server_info.ServerInfo:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/server_info") as r:
        return server_info.parse_server_info(await r.json(), url)


def pd_body(p, room: int, ids: list[int], max_new: int) -> dict[str, Any]:
    return {"input_ids": ids, "sampling_params": {"max_new_tokens": max_new}, "return_logprob": True,
            "bootstrap_host": "127.0.0.1", "bootstrap_port": p.bootstrap_port, "bootstrap_room": room}


@pytest.mark.slow
async def test_pd_pairs_by_room_and_streams_like_sglang(pd_pair):
    p, d = pd_pair
    ids_a, ids_b = list(range(10, 70)), list(range(100, 140))
    # Two rooms in flight at once: each D stream must get the KV of its own room.
    pa, da, pb, db = await asyncio.gather(
        post(f"{p.url}/generate", pd_body(p, 7, ids_a, 6)),
        stream(f"{d.url}/generate", pd_body(p, 7, ids_a, 6)),
        post(f"{p.url}/generate", pd_body(p, 8, ids_b, 3)),
        stream(f"{d.url}/generate", pd_body(p, 8, ids_b, 3)),
    )
    for (status, p_out), lines, ids, n in ((pa, da, ids_a, 6), (pb, db, ids_b, 3)):
        assert status == 200 and p_out["output_ids"] == tokens.output_tokens(ids, 1)
        assert lines[-1] == b"data: [DONE]" and all(x.startswith(b"data: {") for x in lines[:-1])
        last = orjson.loads(lines[-2][len(b"data: ") :])
        assert last["output_ids"] == tokens.output_tokens(ids, n)
        assert last["meta_info"]["finish_reason"] == {"type": "length", "length": n}
        assert last["meta_info"]["prompt_tokens"] == len(ids)
        # Logprobs: the prompt's on P (where it was prefilled), the output's on D.
        assert len(p_out["meta_info"]["input_token_logprobs"]) == len(ids)
        assert [x[1] for x in last["meta_info"]["output_token_logprobs"]] == last["output_ids"]


@pytest.mark.slow
async def test_local_prefill_hits_history_and_publishes_kv_events(pd_pair):
    p, d = pd_pair
    di = await info(d.url)
    assert di.supports_local_prefill and di.kv_events is not None and di.telemetry_endpoint
    assert di.kv_events.block_size == PAGE and di.disaggregation_mode == "decode"
    ctx = zmq.asyncio.Context()
    sub = subscribe(ctx, di.kv_events.endpoints[0])
    await asyncio.sleep(0.3)  # let the SUB connect before the first batch
    try:
        turn1 = list(range(200, 263))
        status, out1 = await post(f"{d.url}/generate", {"input_ids": turn1, "do_local_prefill": True,
                                                         "sampling_params": {"max_new_tokens": 9}})
        assert status == 200 and out1["meta_info"]["cached_tokens"] == 0
        history = turn1 + out1["output_ids"]
        turn2 = {"input_ids": history + [1, 2, 3], "do_local_prefill": True,
                 "sampling_params": {"max_new_tokens": 2}}
        status, out2 = await post(f"{d.url}/generate", turn2)
        # Everything but the last output token was cached, in whole pages.
        assert out2["meta_info"]["cached_tokens"] == (len(history) - 1) // PAGE * PAGE
        seqs = []
        while await sub.poll(1000):
            _, seq, payload = await sub.recv_multipart()
            seqs.append(kv_events.seq_from_bytes(seq))
            kv_events.decode_batch(payload)
        assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # The replay socket returns every buffered batch from seq 0 (whatever the SUB missed while
        # connecting), then the end marker.
        assert di.kv_events.replay_endpoints
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(di.kv_events.replay_endpoints[0])
        await dealer.send_multipart([b"", kv_events.seq_to_bytes(0)])
        replayed = []
        parent: dict[int, int | None] = {}
        while True:
            assert await dealer.poll(5000)
            _, seq, payload = await dealer.recv_multipart()
            if kv_events.seq_from_bytes(seq) == kv_events.END_SEQ:
                break
            replayed.append(kv_events.seq_from_bytes(seq))
            for ev in kv_events.decode_batch(payload).events:
                if isinstance(ev, kv_events.BlockStored):
                    parent.update(dict.fromkeys(ev.block_hashes, ev.parent_block_hash))
        assert replayed[0] == 0 and replayed == sorted(replayed) and replayed[-1] >= seqs[-1]
        # The cached conversation is one chain of SGLang page hashes, each page naming its parent.
        chain = full_page_hashes(history[:-1], PAGE)
        assert [parent[h] for h in chain] == [None, *chain[:-1]]
        dealer.close(0)
    finally:
        sub.close(0)
        ctx.term()


@pytest.mark.slow
async def test_eviction_publishes_block_removed(pd_pair):
    _, d = pd_pair
    di = await info(d.url)
    assert di.kv_events is not None
    ctx = zmq.asyncio.Context()
    sub = subscribe(ctx, di.kv_events.endpoints[0])
    await asyncio.sleep(0.3)
    try:
        # Capacity is 4096 tokens: three 1500-token conversations cannot all stay cached.
        for k in range(3):
            ids = [1000 * (k + 1) + i for i in range(1500)]
            status, _ = await post(f"{d.url}/generate", {"input_ids": ids, "do_local_prefill": True,
                                                          "sampling_params": {"max_new_tokens": 2}})
            assert status == 200
        removed = 0
        while await sub.poll(500):
            _, _, payload = await sub.recv_multipart()
            removed += sum(len(e.block_hashes) for e in kv_events.decode_batch(payload).events
                           if isinstance(e, kv_events.BlockRemoved))
        assert removed > 0
    finally:
        sub.close(0)
        ctx.term()


@pytest.mark.slow
async def test_load_stat_and_telemetry_are_published(pd_pair):
    _, d = pd_pair
    di = await info(d.url)
    assert di.kv_events is not None and di.kv_events.load_endpoints and di.telemetry_endpoint
    ctx = zmq.asyncio.Context()
    subs = []
    try:
        for ep in (di.kv_events.load_endpoints[0], di.telemetry_endpoint):
            subs.append(subscribe(ctx, ep))
        frames = await asyncio.wait_for(subs[0].recv_multipart(), 5)
        assert frames[0] == load_stat.LOAD_TOPIC.encode()
        assert load_stat.decode(frames[2]).max_total_num_tokens == 4096
        topic, payload = await asyncio.wait_for(subs[1].recv_multipart(), 5)
        snap = telemetry.decode(payload)
        assert topic == telemetry.TOPIC and snap.role == "decode" and snap.supports_local_prefill
        assert snap.worker_url == d.url
    finally:
        for s in subs:
            s.close(0)
        ctx.term()


@pytest.mark.slow
async def test_stock_decode_refuses_local_prefill_and_bad_bodies(emulated_worker):
    d = emulated_worker("decode", "--no-ppd")
    status, body = await post(f"{d.url}/generate", {"input_ids": [1, 2, 3], "do_local_prefill": True})
    assert status == 400 and "do_local_prefill" in body["error"]["message"]
    assert not (await info(d.url)).supports_local_prefill
    status, body = await post(f"{d.url}/generate", {"input_ids": [[1, 2]], "bootstrap_room": 1,
                                                    "bootstrap_host": "127.0.0.1", "bootstrap_port": 1})
    assert status == 400 and "batched" in body["error"]["message"]


@pytest.mark.slow
async def test_openai_endpoints(pd_pair):
    _, d = pd_pair
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    status, body = await post(f"{d.url}/v1/chat/completions", {**chat, "do_local_prefill": True})
    assert status == 200 and body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 3
    assert len(body["choices"][0]["message"]["content"]) == 3
    body = {"prompt": [5, 6, 7], "max_tokens": 4, "stream_options": {"include_usage": True}}
    lines = await stream(f"{d.url}/v1/completions", {**body, "do_local_prefill": True})
    chunks = [orjson.loads(x[6:]) for x in lines[:-1]]
    assert lines[-1] == b"data: [DONE]" and chunks[-1]["usage"]["completion_tokens"] == 4
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == tokens.decode(tokens.output_tokens([5, 6, 7], 4))


async def test_abort_request_ends_the_stream(pd_pair):
    _, d = pd_pair
    body = {"input_ids": list(range(300, 340)), "rid": "to-abort", "do_local_prefill": True, "stream": True,
            "sampling_params": {"max_new_tokens": 100_000 // 40}}
    async with aiohttp.ClientSession() as s, s.post(f"{d.url}/generate", json=body) as r:
        lines = []
        async for line in r.content:
            if not line.strip():
                continue
            lines.append(line.rstrip(b"\n"))
            if len(lines) == 1:
                status, _ = await post(f"{d.url}/abort_request", {"rid": "to-abort"})
                assert status == 200
    assert lines[-1] == b"data: [DONE]"
    last = orjson.loads(lines[-2][len(b"data: ") :])
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    assert last["meta_info"]["completion_tokens"] < body["sampling_params"]["max_new_tokens"]
