"""The local-prefill field carrier and the HTTP middleware, against a stub ASGI app."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from sglang_ppd.protocol import fields
from sglang_ppd.protocol.server_info import parse_server_info
from sglang_ppd.worker.carrier import LocalTag, decode_tag, encode_tag, rewrite_generate_body
from sglang_ppd.worker.http_mw import PpdHttpMiddleware


def test_local_body_moves_into_the_carrier_with_a_room() -> None:
    body: dict[str, Any] = {
        "input_ids": [1, 2],
        fields.LOCAL_PREFILL: True,
        fields.LOCAL_PREFILL_CHUNK_LEN: 256,
        fields.ROUTE_KIND: "deflect",
    }
    assert rewrite_generate_body(body, random.Random(0))
    assert decode_tag(body[fields.BOOTSTRAP_HOST]) == LocalTag("deflect", 256)
    assert isinstance(body[fields.BOOTSTRAP_ROOM], int)
    assert not {fields.LOCAL_PREFILL, fields.LOCAL_PREFILL_CHUNK_LEN, fields.ROUTE_KIND} & body.keys()


def test_pd_body_keeps_its_bootstrap_fields() -> None:
    body = {fields.BOOTSTRAP_HOST: "10.0.0.1", fields.BOOTSTRAP_PORT: 8998, fields.BOOTSTRAP_ROOM: 7,
            fields.LOCAL_PREFILL: False, fields.ROUTE_KIND: "pd"}
    assert not rewrite_generate_body(body)
    assert body == {fields.BOOTSTRAP_HOST: "10.0.0.1", fields.BOOTSTRAP_PORT: 8998, fields.BOOTSTRAP_ROOM: 7}
    assert decode_tag("10.0.0.1") is None


def test_bad_chunk_len_and_route_fall_back_and_room_is_kept() -> None:
    body = {fields.LOCAL_PREFILL: True, fields.LOCAL_PREFILL_CHUNK_LEN: True, fields.BOOTSTRAP_ROOM: 5}
    assert rewrite_generate_body(body)
    assert decode_tag(body[fields.BOOTSTRAP_HOST]) == LocalTag("local", None)
    assert body[fields.BOOTSTRAP_ROOM] == 5


def test_decode_tag_rejects_lookalikes() -> None:
    for bad in (None, 3, "ppd-local", "ppd-local/x/1", "ppd-local/local/-1", "ppd-local/local/1/2"):
        assert decode_tag(bad) is None
    assert decode_tag(encode_tag(LocalTag("local", None))) == LocalTag("local", None)


class _Echo:
    """Stub app: /generate echoes the body it got; /server_info answers like SGLang."""

    def __init__(self) -> None:
        self.disconnect_seen = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/generate":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            self.disconnect_seen = (await receive())["type"] == "http.disconnect"
            payload = body
        else:
            payload = json.dumps({"disaggregation_mode": "decode", "page_size": 1}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1")]})
        await send({"type": "http.response.body", "body": payload[:5], "more_body": True})
        await send({"type": "http.response.body", "body": payload[5:], "more_body": False})


def _call(app: Any, path: str, method: str, chunks: list[bytes]) -> tuple[dict[str, Any], bytes]:
    last = len(chunks) - 1
    incoming = [{"type": "http.request", "body": c, "more_body": i < last} for i, c in enumerate(chunks)]
    incoming.append({"type": "http.disconnect"})
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(msg: Any) -> None:
        sent.append(msg)

    asyncio.run(app({"type": "http", "path": path, "method": method}, receive, send))
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


def test_middleware_rewrites_a_chunked_generate_body_and_keeps_the_real_channel() -> None:
    stub = _Echo()
    raw = json.dumps({"input_ids": [1], fields.LOCAL_PREFILL: True}).encode()
    start, body = _call(PpdHttpMiddleware(stub, "tcp://*:5600"), "/generate", "POST", [raw[:7], raw[7:]])
    got = json.loads(body)
    assert decode_tag(got[fields.BOOTSTRAP_HOST]) == LocalTag("local", None)
    assert stub.disconnect_seen  # the app still sees the client's real disconnect, after the body


def test_middleware_advertises_capability_in_server_info() -> None:
    start, body = _call(PpdHttpMiddleware(_Echo(), "tcp://*:5600"), "/server_info", "GET", [b""])
    assert (b"content-length", str(len(body)).encode()) in start["headers"]
    info = parse_server_info(json.loads(body), "http://10.1.2.3:30200")
    assert info.supports_local_prefill
    assert info.telemetry_endpoint == "tcp://10.1.2.3:5600"
    assert info.disaggregation_mode == "decode"


def test_middleware_passes_other_paths_untouched() -> None:
    raw = json.dumps({fields.LOCAL_PREFILL: True}).encode()
    _, body = _call(PpdHttpMiddleware(_Echo(), None), "/generate", "GET", [raw])
    assert json.loads(body) == {fields.LOCAL_PREFILL: True}
