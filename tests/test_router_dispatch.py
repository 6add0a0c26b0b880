"""PD and local dispatch over real HTTP on loopback: bodies, streaming, logprob merge, OpenAI APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from test_router_support import FakeWorker, ScriptedPolicy, start_router

from sglang_ppd.core.types import RouteKind
from sglang_ppd.router.tokenizer import ByteTokenizer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[FakeWorker, FakeWorker, ScriptedPolicy, str]]:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", server_info={"ppd_local_prefill": True}).start()
    policy = ScriptedPolicy()
    _, runner, url = await start_router([p, d], policy)
    yield p, d, policy, url
    await runner.cleanup()
    await p.stop()
    await d.stop()


def _sse(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]


async def test_pd_sends_same_room_to_both_sides(cluster: tuple) -> None:
    p, d, _, url = cluster
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 4}}) as r,
    ):
        assert r.status == 200
        assert r.headers["x-ppd-route"] == "pd"
        body = await r.json()
    assert body["meta_info"]["completion_tokens"] == 4
    (pb,), (db,) = p.received, d.received
    assert pb["bootstrap_room"] == db["bootstrap_room"] and 0 <= pb["bootstrap_room"] < 2**63
    assert pb["bootstrap_host"] == "127.0.0.1" and pb["bootstrap_port"] == 8998
    assert pb["input_ids"] == list(b"hello") == db["input_ids"]
    assert "text" not in db and pb["rid"] == db["rid"]
    assert "do_local_prefill" not in db


async def test_pd_streaming_merges_prefill_logprobs(cluster: tuple) -> None:
    p, d, _, url = cluster
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/generate",
            json={
                "input_ids": [1, 2, 3],
                "sampling_params": {"max_new_tokens": 3},
                "stream": True,
                "return_logprob": True,
            },
        ) as r,
    ):
        assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
        chunks = _sse(await r.read())
    assert chunks[-1] == b"[DONE]"
    objs = [orjson.loads(c) for c in chunks[:-1]]
    assert len(objs) == 3
    assert all(o["meta_info"]["input_token_logprobs"] == [[-0.5, t, None] for t in (1, 2, 3)] for o in objs)
    assert objs[-1]["meta_info"]["completion_tokens"] == 3


async def test_local_route_goes_only_to_decode(cluster: tuple) -> None:
    p, d, policy, url = cluster
    policy.force = RouteKind.LOCAL
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}, "stream": True}
        ) as r,
    ):
        assert r.headers["x-ppd-route"] == "local"
        assert len(_sse(await r.read())) == 3
    assert p.received == []
    (db,) = d.received
    assert db["do_local_prefill"] is True and db["ppd_route"] == "local"
    assert "bootstrap_room" not in db


async def test_stock_decode_is_never_sent_a_local_route() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()  # no ppd_local_prefill in /server_info
    policy = ScriptedPolicy()
    policy.force = RouteKind.LOCAL
    router, runner, url = await start_router([p, d], policy)
    try:
        async with aiohttp.ClientSession() as s, s.post(f"{url}/generate", json={"text": "x"}) as r:
            assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
        assert "do_local_prefill" not in d.received[0] and len(p.received) == 1
        assert router.metrics.route_decisions[("pd", "guard:not_ppd_capable")] == 1
        assert not policy.seen[0][1].decode[0].supports_local_prefill
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


async def test_openai_chat_applies_template_and_streams(cluster: tuple) -> None:
    p, d, _, url = cluster
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": 3}) as r:
            assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
            whole = await r.json()
        async with s.post(
            f"{url}/v1/chat/completions",
            json={
                "messages": messages,
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as r:
            chunks = _sse(await r.read())
        async with s.get(f"{url}/v1/models") as r:
            models = await r.json()
    assert d.received[0]["input_ids"] == ByteTokenizer().apply_chat_template(messages)
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] == 3
    content = whole["choices"][0]["message"]["content"]
    assert len(content) == 3 and whole["choices"][0]["finish_reason"] == "length"
    assert chunks[-1] == b"[DONE]"
    objs = [orjson.loads(c) for c in chunks[:-1]]
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(o["choices"][0]["delta"].get("content", "") for o in objs if o["choices"])
    assert streamed == content
    assert objs[-1]["usage"]["completion_tokens"] == 3
    assert models["data"][0]["id"] == "fake-model"


async def test_openai_completions_whole_and_streamed(cluster: tuple) -> None:
    _, d, _, url = cluster
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v1/completions", json={"prompt": "abc", "max_tokens": 5}) as r:
            whole = await r.json()
        async with s.post(
            f"{url}/v1/completions", json={"prompt": [97, 98, 99], "max_tokens": 5, "stream": True}
        ) as r:
            chunks = _sse(await r.read())
    assert whole["object"] == "text_completion" and len(whole["choices"][0]["text"]) == 5
    text = "".join(orjson.loads(c)["choices"][0]["text"] for c in chunks[:-1])
    assert text == whole["choices"][0]["text"]
    assert d.received[0]["input_ids"] == d.received[1]["input_ids"] == [97, 98, 99]
    assert d.received[0]["sampling_params"]["max_new_tokens"] == 5


async def test_pd_whole_reply_merges_prefill_logprobs(cluster: tuple) -> None:
    _, _, _, url = cluster
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/generate",
            json={"input_ids": [7, 8], "sampling_params": {"max_new_tokens": 2}, "return_logprob": True},
        ) as r,
    ):
        assert r.status == 200 and r.headers["x-ppd-route"] == "pd"
        body = await r.json()
    assert body["meta_info"]["input_token_logprobs"] == [[-0.5, 7, None], [-0.5, 8, None]]
    assert body["meta_info"]["completion_tokens"] == 2
