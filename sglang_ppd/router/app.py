"""HTTP front end: SGLang ``/generate``, OpenAI APIs, and the operator endpoints of
:mod:`sglang_ppd.router.admin`, on one aiohttp application.

A generate-type request's path, each module entered once on the way in: the front door
(:mod:`~sglang_ppd.router.front_door`: connection cap, header and body timeouts) -> admission (body
read, then an in-flight slot: :mod:`~sglang_ppd.router.admission`) -> prepare
(:mod:`~sglang_ppd.router.requests`) -> serve (:mod:`~sglang_ppd.router.serving`: decide, attempt,
retry) -> attempt (:mod:`~sglang_ppd.router.attempt`) -> upstream; the reply comes back up through
:mod:`~sglang_ppd.router.streaming` (a stream) or :func:`~sglang_ppd.router.front_door.send_whole`
(a whole reply, written before the in-flight slot is released).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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
from sglang_ppd.router.front_door import (
    CappedSite,
    QuietServerLog,
    connection_cap,
    read_body,
    send_whole,
)
from sglang_ppd.router.httpio import (
    MAX_NEW_TOKENS_CAP,
    ROUTER,
    Handler,
    error_response,
    parse_json,
)
from sglang_ppd.router.peers import PEERS, Group, Peers
from sglang_ppd.router.requests import BadRequest, prepare_generate, prepare_openai
from sglang_ppd.router.service import Router
from sglang_ppd.router.serving import serve

CLIENT_CLOSED = 499
"""The status recorded (nginx's convention) for a request whose client disconnected before its reply."""


# --- handlers ----------------------------------------------------------------------------------
BodyHandler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


def _admitted(handler: BodyHandler, endpoint: str) -> Handler:
    """Admission, the first step of a request's path: read the body (bounded in time and size),
    then take an in-flight slot, then hand the parsed body to ``handler``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        router = request.app[ROUTER]
        cfg = router.cfg
        status = 500
        try:
            body = parse_json(await read_body(request, cfg.body_timeout_s, cfg.max_body_bytes))
            rejected = await router.admission.acquire()
            if rejected is not None:
                router.metrics.rejected[rejected] += 1
                status = 429 if rejected == "overloaded" else 503
                msg = "router overloaded" if status == 429 else "router busy: queued too long"
                return error_response(status, f"{msg}; retry later", {"Retry-After": "1"})
            try:
                # The slot is held until the reply is written (as a stream's is), so slow readers
                # hold at most ``max_inflight`` whole replies in memory, each for ``write_timeout_s``.
                resp = await handler(request, body)
                if isinstance(resp, web.Response):
                    resp = await send_whole(request, resp, cfg.write_timeout_s, router.metrics)
            finally:
                router.admission.release()
            status = resp.status
            return resp
        except BadRequest as exc:
            status = exc.status
            resp = error_response(exc.status, str(exc))
            if exc.status == 408:
                router.metrics.rejected["body_timeout"] += 1
                resp.force_close()  # the rest of a slow body is not worth waiting for
            return resp
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
            router.metrics.requests[(endpoint, status)] += 1

    return wrapped


async def generate(request: web.Request, body: Any) -> web.StreamResponse:
    router = request.app[ROUTER]
    prep = prepare_generate(body, router.tokenizer, router.cfg.max_request_tokens, MAX_NEW_TOKENS_CAP)
    return await serve(request, prep, "generate")


def _openai(chat: bool) -> BodyHandler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        router = request.app[ROUTER]
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


async def start_server(
    router: Router, host: str, port: int, group: Group | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (useful with ``port=0``). ``group``:
    this process is one of a ``--processes N`` group sharing the port (SO_REUSEPORT)."""
    cfg = router.cfg
    app = build_app(router)
    if group is not None:
        peers = Peers(router, group)
        app[PEERS] = peers
        app.on_startup.append(lambda _: peers.start())
        app.on_cleanup.append(lambda _: peers.close())
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=cfg.header_timeout_s,
        logger=QuietServerLog(logging.getLogger("aiohttp.server"), {}),
    )
    await runner.setup()
    site = CappedSite(
        runner, host, port, connection_cap(cfg.max_connections), router.metrics, reuse_port=group is not None
    )
    await site.start()
    return runner, site.bound_port()
