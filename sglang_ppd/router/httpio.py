"""Shared HTTP pieces of the router's front end: the app key, headers, JSON replies and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from sglang_ppd.router.requests import BadRequest
from sglang_ppd.router.service import Router

ROUTER: web.AppKey[Router] = web.AppKey("router", Router)
ROUTE_HEADER = "x-ppd-route"
REASON_HEADER = "x-ppd-reason"
SESSION_HEADER = "x-ppd-session-id"
TURN_HEADER = "x-ppd-turn"
MAX_NEW_TOKENS_CAP = 1_000_000
MAX_SESSION_ID_LEN = 256
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(obj), content_type="application/json", headers=headers
    )


async def read_json(request: web.Request) -> Any:
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
