"""Fuzz: at least 1,000 malformed or hostile requests against the router's APIs give 0 5xx and
0 crashes.

Hypothesis draws bodies for SGLang ``/generate`` and OpenAI ``/v1/completions`` /
``/v1/chat/completions`` with wrong types, negative or huge ``max_tokens``, prompts past the router's
context limit, batches, router-owned fields and unknown keys; raw bytes (invalid UTF-8, truncated or
deeply nested JSON, oversized bodies); and hostile headers (session and turn). The router runs in a
thread of this process over stub workers that answer any well-formed ``/generate`` at once, so any
5xx can only come from the router itself. The run is derandomized (the same 1,000 examples each time).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_router_support import PROFILE, ScriptedPolicy, serve_loopback

from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer

pytestmark = pytest.mark.timeout(120)
NUM_EXAMPLES = 1000
BATCH = 10
"""Requests per Hypothesis example: drawing is the slow part, and a batch amortizes its overhead."""
MAX_BODY_BYTES = 64 * 1024
CONTEXT_TOKENS = 48
MODEL = "fuzz-model"


async def _stub_generate(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    reply = {"text": "x", "meta_info": {"completion_tokens": 1, "prompt_tokens": len(body["input_ids"])}}
    if not body.get("stream"):
        return web.json_response(reply)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: " + json.dumps(reply).encode() + b"\n\ndata: [DONE]\n\n")
    return resp


async def _stub(role: str) -> tuple[web.AppRunner, str]:
    async def info(_: web.Request) -> web.Response:
        return web.json_response(
            {"disaggregation_mode": role, "served_model_name": MODEL, "ppd_local_prefill": True}
        )

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"loads": []})

    app = web.Application()
    app.router.add_get("/server_info", info)
    app.router.add_get("/health", ok)
    app.router.add_get("/v1/loads", ok)
    app.router.add_post("/abort_request", ok)
    app.router.add_post("/generate", _stub_generate)
    return await serve_loopback(app)


class RouterThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.runners: list[web.AppRunner] = []
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        (p_runner, p_url), (d_runner, d_url) = await _stub("prefill"), await _stub("decode")
        cfg = RouterConfig.model_validate(
            {
                "port": 0,
                "workers": [{"url": p_url, "role": "prefill"}, {"url": d_url, "role": "decode"}],
                "max_body_bytes": MAX_BODY_BYTES,
                "max_request_tokens": CONTEXT_TOKENS,
                "model_name": MODEL,
            }
        )
        router = Router(cfg, ScriptedPolicy(), PROFILE, ByteTokenizer(), "scripted")
        runner, self.port = await start_server(router, "127.0.0.1", 0)
        self.runners = [runner, p_runner, d_runner]

    def __enter__(self) -> RouterThread:
        self.thread.start()
        assert self._ready.wait(20), "router did not start"
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            for r in self.runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(20)


@pytest.fixture(scope="module")
def router_port() -> Iterator[int]:
    with RouterThread() as rt:
        yield rt.port


# --- strategies ----------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)
counts = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.integers(min_value=10**5, max_value=10**13),
    st.sampled_from([0, 1, 2**31, 2**63, -(2**63)]),
    json_values,
)
token_lists = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=20),
    st.lists(st.integers(0, 255), min_size=CONTEXT_TOKENS + 1, max_size=CONTEXT_TOKENS + 4),
    st.lists(st.lists(st.integers(0, 9), max_size=3), max_size=3),
    json_values,
)
prompts = st.one_of(
    st.text(max_size=60),
    st.text(min_size=CONTEXT_TOKENS + 1, max_size=CONTEXT_TOKENS + 8),
    token_lists,
    json_values,
)
sampling = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "max_new_tokens": counts,
            "temperature": json_values,
            "stop": json_values,
            "extra": json_values,
        },
    ),
    json_values,
)
generate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "text": prompts,
        "input_ids": token_lists,
        "sampling_params": sampling,
        "stream": json_values,
        "return_logprob": json_values,
        "rid": json_values,
        "bootstrap_room": json_values,
        "do_local_prefill": json_values,
        "unknown_field": json_values,
    },
)
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | json_values,
                "content": st.text(max_size=30) | json_values,
                "name": json_values,
            },
        ),
        max_size=4,
    ),
    json_values,
)
openai_common = {
    "model": st.sampled_from([MODEL, "other-model", ""]) | json_values,
    "max_tokens": counts,
    "max_completion_tokens": counts,
    "n": counts,
    "stream": json_values,
    "stream_options": json_values,
    "temperature": json_values,
    "top_p": json_values,
    "stop": json_values,
    "seed": json_values,
    "logprobs": json_values,
}
completions_bodies = st.fixed_dictionaries({}, optional={"prompt": prompts, **openai_common})
chat_bodies = st.fixed_dictionaries({}, optional={"messages": messages, **openai_common})
api_paths = ["/generate", "/v1/completions", "/v1/chat/completions"]
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-ppd-session-id": st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=300),
        "x-ppd-turn": st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=12),
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]
        ),
    },
)


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"text": "\xff\xfe"}',
            b'{"text": "\\ud800"}',
            b"[" * 5000 + b"]" * 5000,
            b'{"text": "a"}' + b" " * (MAX_BODY_BYTES + 1),
            b'{"text": "a", "text": 5}',
            b"null",
            b"1e999999",
            b'{"prompt": NaN}',
        ]
    ),
    generate_bodies.map(_json).map(lambda b: b[: len(b) // 2]),
)
# Well-formed requests with hostile extras, so the success path is fuzzed too.
valid_generate = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=40)},
    optional={
        "sampling_params": st.fixed_dictionaries(
            {}, optional={"max_new_tokens": st.integers(0, 64), "temperature": json_values}
        ),
        "stream": st.booleans(),
        "rid": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
        "unknown_field": json_values,
    },
)
cases = st.one_of(
    st.tuples(st.just("/generate"), valid_generate.map(_json), headers),
    st.tuples(st.just("/generate"), generate_bodies.map(_json), headers),
    st.tuples(st.just("/v1/completions"), completions_bodies.map(_json), headers),
    st.tuples(st.just("/v1/chat/completions"), chat_bodies.map(_json), headers),
    st.tuples(st.sampled_from(api_paths), raw_bodies, headers),
)


def _send(port: int, path: str, body: bytes, hdrs: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **hdrs})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_5xx(router_port: int) -> None:
    statuses: dict[int, int] = {}

    @settings(
        max_examples=NUM_EXAMPLES // BATCH,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(cases, min_size=BATCH, max_size=BATCH))
    def batch(batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
        for path, body, hdrs in batch:
            status, reply = _send(router_port, path, body, hdrs)
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (path, body[:300], hdrs, status, reply[:300])
            if status >= 400 and reply.startswith(b"{"):  # not the HTTP parser's own 400/413 text
                assert "error" in json.loads(reply), reply[:300]  # a JSON error naming the problem

    batch()
    assert sum(statuses.values()) >= 1000
    assert statuses.get(200, 0) > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0
    assert _send(router_port, "/generate", b'{"text": "still alive"}', {})[0] == 200
