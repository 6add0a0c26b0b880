"""Serving one routed request: its rid and turn, choose the route, attempt it, retry once before the
first token, then the reply (whole here; a stream's in :mod:`sglang_ppd.router.streaming`).

Every generate-type reply carries ``x-ppd-route: pd|local|deflect``. A client request is retried
once on another route when its attempt fails before the first token; after that a stream ends with
an error event (``data: {"error": {...}}`` then ``data: [DONE]``). A client that disconnects gets
its upstream requests aborted.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from sglang_ppd.router import openai_format
from sglang_ppd.router.attempt import Attempt
from sglang_ppd.router.attempt_state import Phase
from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.httpio import (
    MAX_SESSION_ID_LEN,
    REASON_HEADER,
    ROUTE_HEADER,
    ROUTER,
    SESSION_HEADER,
    TURN_HEADER,
    error_response,
    json_response,
)
from sglang_ppd.router.outcome import Ending, count_upstream_error, record_finish
from sglang_ppd.router.requests import BadRequest, Prepared
from sglang_ppd.router.route_choice import NoRoute, choose_route
from sglang_ppd.router.security import check_rid
from sglang_ppd.router.service import Router
from sglang_ppd.router.streaming import stream_reply

log = logging.getLogger(__name__)


def _sglang_session(body: dict[str, Any]) -> str | None:
    """SGLang's own session of a request (``session_id``, or ``session_params["id"]``): what its KV
    events attribute stored blocks to (0.5.20+)."""
    params = body.get("session_params")
    sid = body.get("session_id") or (params.get("id") if isinstance(params, dict) else None)
    return sid if isinstance(sid, str) and 0 < len(sid) <= MAX_SESSION_ID_LEN else None


def _turn(request: web.Request, router: Router, body: dict[str, Any]) -> tuple[str | None, int | None, str]:
    session = request.headers.get(SESSION_HEADER)
    if session is not None and len(session) > MAX_SESSION_ID_LEN:
        raise BadRequest(f"{SESSION_HEADER} is longer than {MAX_SESSION_ID_LEN} characters")
    if session is None:
        session = _sglang_session(body)
    raw_turn = request.headers.get(TURN_HEADER)
    # isascii(): str.isdigit() also accepts digits int() cannot parse, such as "\xb2".
    ok_turn = raw_turn is not None and raw_turn.isascii() and raw_turn.isdigit() and len(raw_turn) < 10
    turn = int(raw_turn) if ok_turn and raw_turn is not None else None
    if turn is not None:
        turn_class = "2+" if turn >= 2 else "1"
    else:
        turn_class = "2+" if router.sessions.decode_of(session) is not None else "1"
    return session, turn, turn_class


def _new_rid() -> str:
    """A router-made request id: 128 random bits, so no client can predict (and squat) the ids of
    other clients' requests, which every reply's ``id`` would otherwise reveal."""
    return secrets.token_hex(16)


def _header_safe(reason: str | None) -> str:
    """A route reason as a header value: printable ASCII, bounded (a plugin's reason is free text)."""
    if not reason:
        return "unspecified"
    text = reason if reason.isascii() and reason.isprintable() else reason.encode("ascii", "replace").decode()
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _failure_response(f: UpstreamFailure) -> web.Response:
    if f.body is not None and 400 <= f.status < 500:
        return web.Response(status=f.status, body=f.body, content_type="application/json")
    return error_response(f.status if f.status >= 500 else 502, str(f))


async def serve(
    request: web.Request, prep: Prepared, api: str, include_usage: bool = False
) -> web.StreamResponse:
    """Serve one request under its ``rid``; a client ``rid`` already in flight gets 409, since
    workers key a request's state (and ``/abort_request``) by it."""
    router = request.app[ROUTER]
    rid = prep.body.get("rid")
    if not isinstance(rid, str) or not rid:
        rid = _new_rid()
    check_rid(rid)
    inflight = router.reliability.inflight_rids
    if rid in inflight:
        raise BadRequest(f"a request with rid {rid!r} is already in flight", status=409)
    inflight.add(rid)
    try:
        return await _serve(request, router, prep, api, include_usage, rid)
    finally:
        inflight.discard(rid)


async def _serve(
    request: web.Request, router: Router, prep: Prepared, api: str, include_usage: bool, rid: str
) -> web.StreamResponse:
    session, turn, turn_class = _turn(request, router, prep.body)
    ending = Ending(session, turn_class, time.monotonic())
    feats = router.features(rid, prep.input_ids, prep.max_new_tokens, session, turn)
    exclude: set[str] = set()
    att: Attempt | None = None
    first: bytes | None = None
    raw: bytes = b""
    parsed: dict[str, Any] | None = None
    last_failure: UpstreamFailure | None = None
    for try_no in range(2):
        try:
            route = choose_route(router, feats, exclude)
            prediction, router.prediction = router.prediction, None
        except NoRoute as exc:
            if last_failure is not None:
                return _failure_response(last_failure)
            router.metrics.rejected["no_route"] += 1
            return error_response(503, str(exc))
        att = Attempt(router, prep, route, rid if try_no == 0 else f"{rid}-retry")
        try:
            await att.open()
            if prep.stream:
                first = await att.next_line()
                if first is None:
                    raise UpstreamFailure(
                        f"{att.decode_url} ended its stream before the first token", (att.decode_url,)
                    )
                if att.first_token_s is not None:  # streamed: the first token's time is the TTFT
                    router.learn(prediction, 1000.0 * (att.first_token_s - att.dispatch_s))
            else:
                raw, parsed = await att.whole()
            last_failure = None
            break
        except UpstreamFailure as f:
            phase = await att.failed(f)
            count_upstream_error(router, f)
            last_failure = f
            if phase is not Phase.FAILED_RETRYABLE or try_no == 1:
                break
            log.info("request %s: %s; retrying on another route", rid, f)
            router.metrics.retries += 1
            exclude.update(f.workers)
            att.retried()
        except BaseException:
            await att.abort()
            raise
    if last_failure is not None:
        return _failure_response(last_failure)
    assert att is not None
    headers = {ROUTE_HEADER: att.route.kind.value, REASON_HEADER: _header_safe(att.route.reason)}
    if not prep.stream:
        att.finish()
        record_finish(router, att, ending, None, streamed=False)
        if api == "generate":
            return web.Response(body=raw, content_type="application/json", headers=headers)
        gen = parsed if parsed is not None else orjson.loads(raw)
        return json_response(
            openai_format.full_response(
                gen, api == "chat", rid, router.model_name, len(prep.input_ids), prep.return_token_ids
            ),
            headers=headers,
        )
    return await stream_reply(request, router, att, first or b"", api, include_usage, ending, headers)
