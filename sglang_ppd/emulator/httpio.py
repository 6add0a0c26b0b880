"""HTTP helpers shared by the SGLang-native and the OpenAI endpoints of the emulated worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from sglang_ppd.emulator.engine import Engine
from sglang_ppd.emulator.request import RequestError, RequestHandle

ENGINE_KEY = web.AppKey("engine", Engine)
MAX_BODY_BYTES = 64 * 1024 * 1024


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(message: str, status: int = 400) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return json_response(body, status)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


async def stream_sse(
    request: web.Request, handle: RequestHandle, chunk: Callable[[RequestHandle], list[dict[str, Any]]]
) -> web.StreamResponse:
    """SGLang/OpenAI SSE: ``data: {...}\\n\\n`` per update, then ``data: [DONE]``. A client that goes
    away aborts the request, as SGLang's abort background task does."""
    engine = request.app[ENGINE_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        sent = 0
        while True:
            await handle.wait_change()
            if len(handle.output_ids) > sent or handle.finished:
                for item in chunk(handle):
                    await resp.write(b"data: " + orjson.dumps(item) + b"\n\n")
                sent = len(handle.output_ids)
            if handle.finished:
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, OSError):
        engine.abort(handle.inp.rid)
    finally:
        if not handle.finished:
            engine.abort(handle.inp.rid)
    return resp
