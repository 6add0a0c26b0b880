"""ASGI middleware for the decode server's HTTP front: the request carrier and the capability fields.

- ``POST /generate``: rewrites the JSON body with :func:`~sglang_ppd.worker.carrier.rewrite_generate_body`.
- ``GET /server_info``: adds ``ppd_local_prefill: true`` and ``ppd_telemetry_endpoint`` (the names in
  :mod:`sglang_ppd.protocol.server_info`) to SGLang's own reply.

Plain ASGI, no FastAPI/sglang import, so it is tested on CPU with a stub app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sglang_ppd.protocol.server_info import LOCAL_PREFILL_FIELD, TELEMETRY_ENDPOINT_FIELD
from sglang_ppd.worker.carrier import rewrite_generate_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 256 * 1024 * 1024


class PpdHttpMiddleware:
    def __init__(self, app: App, telemetry_endpoint: str | None) -> None:
        self.app = app
        self.telemetry_endpoint = telemetry_endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path"), scope.get("method")
        if path == "/generate" and method in ("POST", "PUT"):
            await self.app(scope, await self._rewritten(receive), send)
        elif path == "/server_info" and method == "GET":
            await self.app(scope, receive, self._augmenting(send))
        else:
            await self.app(scope, receive, send)

    @staticmethod
    async def _rewritten(receive: Receive) -> Receive:
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return _replay([msg], receive)
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES or not msg.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None  # let SGLang report the malformed body itself
        if isinstance(body, dict) and rewrite_generate_body(body):
            raw = json.dumps(body).encode()
        return _replay([{"type": "http.request", "body": raw, "more_body": False}], receive)

    def _augmenting(self, send: Send) -> Send:
        start: Message | None = None
        chunks: list[bytes] = []

        async def wrapped(msg: Message) -> None:
            nonlocal start
            if msg["type"] == "http.response.start":
                start = msg
                return
            if msg["type"] != "http.response.body" or start is None:
                await send(msg)
                return
            chunks.append(msg.get("body", b""))
            if msg.get("more_body", False):
                return
            raw = b"".join(chunks)
            if start.get("status") == 200:
                try:
                    info = json.loads(raw)
                except ValueError:
                    info = None
                if isinstance(info, dict):
                    info[LOCAL_PREFILL_FIELD] = True
                    info[TELEMETRY_ENDPOINT_FIELD] = self.telemetry_endpoint
                    raw = json.dumps(info).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(raw)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": raw, "more_body": False})

        return wrapped


def _replay(messages: list[Message], then: Receive) -> Receive:
    """Hands out the buffered body, then the real channel: SGLang polls it to notice a client
    disconnect and abort the request, so it must not see a fake one."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive
