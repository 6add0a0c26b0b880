"""HTTP front end: SGLang ``/generate``, OpenAI APIs, and the operator endpoints of
:mod:`sglang_ppd.router.admin`, on one aiohttp application.

Requests beyond ``max_inflight`` wait in a queue of ``max_queued``; past it the router answers 429
with ``Retry-After``. Serving one request is :mod:`sglang_ppd.router.serving`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from sglang_ppd.router.admin import (
    add_worker,
    auth_middleware,
    health,
    list_workers,
    metrics,
    models,
    remove_worker,
    stats,
)
from sglang_ppd.router.httpio import (
    MAX_NEW_TOKENS_CAP,
    ROUTER,
    Handler,
    error_response,
    read_json,
)
from sglang_ppd.router.requests import BadRequest, prepare_generate, prepare_openai
from sglang_ppd.router.service import Router
from sglang_ppd.router.serving import serve

CLIENT_CLOSED = 499
"""The status recorded (nginx's convention) for a request whose client disconnected before its reply."""


# --- handlers ----------------------------------------------------------------------------------
def _admitted(handler: Handler, endpoint: str) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        router = request.app[ROUTER]
        if router.num_inflight >= router.cfg.max_inflight and router.num_queued >= router.cfg.max_queued:
            router.metrics.rejected["overloaded"] += 1
            router.metrics.requests[(endpoint, 429)] += 1
            return error_response(429, "router overloaded; retry later", headers={"Retry-After": "1"})
        if router._admission.locked():  # a free slot is taken at once (no wait_for task, no timer)
            router.num_queued += 1
            try:
                await asyncio.wait_for(router._admission.acquire(), router.cfg.max_queue_wait_s)
            except asyncio.TimeoutError:
                router.metrics.rejected["queue_timeout"] += 1
                router.metrics.requests[(endpoint, 503)] += 1
                return error_response(503, "router busy: queued too long; retry later", {"Retry-After": "1"})
            finally:
                router.num_queued -= 1
        else:
            await router._admission.acquire()
        router.num_inflight += 1
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except BadRequest as exc:
            status = exc.status
            return error_response(exc.status, str(exc))
        except ConnectionError:
            # The client hung up and a write saw it before aiohttp cancelled this handler. Raised, it
            # would be logged as a traceback at ERROR; a response returned to a closed connection is
            # dropped quietly.
            status = CLIENT_CLOSED  # the client went away: not a router or worker failure
            router.metrics.client_aborts += 1
            return web.Response(status=CLIENT_CLOSED)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            router.metrics.client_aborts += 1
            raise
        finally:
            router.num_inflight -= 1
            router._admission.release()
            router.metrics.requests[(endpoint, status)] += 1

    return wrapped


async def generate(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER]
    prep = prepare_generate(
        await read_json(request), router.tokenizer, router.cfg.max_request_tokens, MAX_NEW_TOKENS_CAP
    )
    return await serve(request, prep, "generate")


def _openai(chat: bool) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        router = request.app[ROUTER]
        body = await read_json(request)
        prep = prepare_openai(
            body,
            chat,
            router.tokenizer,
            router.model_name,
            router.cfg.max_request_tokens,
            MAX_NEW_TOKENS_CAP,
            router.cfg.default_max_tokens,
        )
        opts = body.get("stream_options") if isinstance(body, dict) else None
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        return await serve(request, prep, "chat" if chat else "completions", include_usage)

    return handler


def build_app(router: Router) -> web.Application:
    cfg = router.cfg
    middlewares = [auth_middleware(cfg.api_key, cfg.admin_key)] if (cfg.api_key or cfg.admin_key) else []
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=middlewares)
    app[ROUTER] = router
    app.router.add_post("/generate", _admitted(generate, "generate"))
    app.router.add_post("/v1/completions", _admitted(_openai(False), "completions"))
    app.router.add_post("/v1/chat/completions", _admitted(_openai(True), "chat"))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    app.router.add_get("/workers", list_workers)
    app.router.add_post("/workers", add_worker)
    app.router.add_delete("/workers", remove_worker)

    async def on_startup(_: web.Application) -> None:
        await router.start()

    async def on_cleanup(_: web.Application) -> None:
        await router.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def start_server(router: Router, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (useful with ``port=0``)."""
    runner = web.AppRunner(build_app(router), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    server: Any = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, bound
