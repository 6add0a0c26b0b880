"""Operator endpoints: ``/v1/models``, ``/health``, ``/metrics``, ``/stats``, ``/workers``, and the
API / admin key middleware (``Authorization: Bearer <key>``; ``/health`` is always open)."""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web

from sglang_ppd.core.config import ConfigError, validate
from sglang_ppd.core.types import Role
from sglang_ppd.router.config import WorkerSpec
from sglang_ppd.router.httpio import (
    ROUTER,
    Handler,
    error_response,
    json_response,
    read_json,
)
from sglang_ppd.router.peers import PEERS
from sglang_ppd.router.requests import BadRequest
from sglang_ppd.router.security import public_url
from sglang_ppd.router.service import Router
from sglang_ppd.router.stats import build_stats, worker_rows


async def models(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    created = int(time.time() - (time.monotonic() - router.started_s))
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": router.model_name, "object": "model", "created": created, "owned_by": "sglang_ppd"}
            ],
        }
    )


async def health(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    healthy = [w for w in router.registry.all() if w.healthy]
    ok = any(w.role is Role.DECODE for w in healthy)
    return json_response(
        {"status": "ok" if ok else "no healthy decode worker", "num_healthy_workers": len(healthy)},
        status=200 if ok else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    peers = request.app.get(PEERS)
    text = router.metrics.render(worker_rows(router)) if peers is None else await peers.metrics_text()
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def stats(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    peers = request.app.get(PEERS)
    body = build_stats(router) if peers is None else await peers.stats()
    return json_response({**body, "reliability": router.reliability.stats()})


def _worker_json(router: Router, url: str) -> dict[str, Any]:
    return next(w for w in build_stats(router)["workers"] if w["url"] == public_url(url))


async def list_workers(request: web.Request) -> web.Response:
    return json_response({"workers": build_stats(request.app[ROUTER])["workers"]})


async def add_worker(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    try:
        spec = validate(WorkerSpec, await read_json(request), "POST /workers body")
        w = await router.add_worker(spec)
    except (BadRequest, ConfigError, ValueError) as exc:
        return error_response(409 if "already registered" in str(exc) else 400, str(exc))
    return json_response(_worker_json(router, w.url), status=201)


async def remove_worker(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    url = request.query.get("url")
    if url is None and request.can_read_body:
        try:
            body = await read_json(request)
        except BadRequest as exc:
            return error_response(400, str(exc))
        url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return error_response(400, 'give the worker\'s url (?url=... or a JSON body {"url": ...})')
    try:
        w = await router.remove_worker(url)
    except (KeyError, ValueError) as exc:
        return error_response(404, str(exc).strip("'\""))
    return json_response({"removed": w.url})


# --- auth --------------------------------------------------------------------------------------
def auth_middleware(api_key: str | None, admin_key: str | None) -> Any:
    def allowed(request: web.Request, key: str) -> bool:
        given = request.headers.get("Authorization", "")
        try:
            raw = given.encode()
        except UnicodeEncodeError:  # bytes that are not UTF-8 (kept as surrogates): not the key
            return False
        return hmac.compare_digest(raw, f"Bearer {key}".encode())

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        admin = request.path == "/workers" and request.method != "GET"
        key = (admin_key or api_key) if admin else api_key
        if key is not None and not allowed(request, key):
            return error_response(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return await handler(request)

    return auth
