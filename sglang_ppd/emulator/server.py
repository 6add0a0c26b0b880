"""The emulated worker's HTTP surface: the SGLang subset the router and clients use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sglang_ppd.emulator import openai_api, parse, reports
from sglang_ppd.emulator.engine import Engine
from sglang_ppd.emulator.httpio import (
    ENGINE_KEY,
    MAX_BODY_BYTES,
    error_response,
    json_response,
    read_json,
    stream_sse,
)
from sglang_ppd.emulator.request import RequestError, RequestHandle

PORTS_KEY = web.AppKey("ports", reports.Ports)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(str(exc), exc.status)


def sglang_output(handle: RequestHandle) -> dict[str, Any]:
    return {
        "text": handle.text,
        "output_ids": list(handle.output_ids),
        "meta_info": handle.meta_info(),
    }


async def generate(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = await read_json(request)
    handle = engine.submit(parse.generate_input(body, engine.role, engine.ppd, engine.cfg.conditional_agg))
    if body.get("stream"):
        return await stream_sse(request, handle, lambda h: [sglang_output(h)])
    try:
        await handle.wait_finished()
    finally:
        if not handle.finished:
            engine.abort(handle.inp.rid)
    if handle.error is not None:
        return error_response(handle.error, 500)
    return json_response(sglang_output(handle))


async def health(request: web.Request) -> web.Response:
    failure = request.app[ENGINE_KEY].failure
    return web.Response(status=200) if failure is None else web.Response(status=503, text=failure)


async def server_info(request: web.Request) -> web.Response:
    return json_response(reports.server_info_body(request.app[ENGINE_KEY], request.app[PORTS_KEY]))


async def loads(request: web.Request) -> web.Response:
    return json_response(reports.loads_body(request.app[ENGINE_KEY]))


async def model_info(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    return json_response({"model_path": engine.model_name, "tokenizer_path": None, "is_generation": True})


async def models(request: web.Request) -> web.Response:
    name = request.app[ENGINE_KEY].model_name
    return json_response({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "sglang"}]})


async def abort_request(request: web.Request) -> web.Response:
    body = await read_json(request)
    engine = request.app[ENGINE_KEY]
    if body.get("abort_all"):
        engine.abort_all()
    elif isinstance(body.get("rid"), str):
        engine.abort(body["rid"])
    else:
        raise RequestError("pass 'rid' (str) or 'abort_all': true")
    return web.Response(status=200)


async def flush_cache(request: web.Request) -> web.Response:
    if await request.app[ENGINE_KEY].flush_cache():
        return web.Response(text="Cache flushed.\n")
    return web.Response(status=400, text="Cache not flushed: requests are running.\n")


def build_app(engine: Engine, ports: reports.Ports) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app[PORTS_KEY] = ports
    app.router.add_post("/generate", generate)
    app.router.add_put("/generate", generate)
    app.router.add_post("/v1/completions", openai_api.completions)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/get_server_info", server_info)
    app.router.add_get("/v1/loads", loads)
    app.router.add_get("/get_model_info", model_info)
    app.router.add_get("/model_info", model_info)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/abort_request", abort_request)
    app.router.add_post("/flush_cache", flush_cache)
    app.router.add_get("/flush_cache", flush_cache)
    return app
