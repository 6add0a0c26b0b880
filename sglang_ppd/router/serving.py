"""Serving one routed request: choose the route, dispatch, retry once before the first token, stream.

Every generate-type reply carries ``x-ppd-route: pd|local|deflect``. A client request is retried
once on another route when its attempt fails before the first token; after that a stream ends with
an error event (``data: {"error": {...}}`` then ``data: [DONE]``). A client that disconnects gets
its upstream requests aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from sglang_ppd.core.types import RouteKind
from sglang_ppd.router import openai_format
from sglang_ppd.router.attempt import Attempt
from sglang_ppd.router.attempt_state import Phase
from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.front_door import SlowReaderGuard
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
from sglang_ppd.router.requests import BadRequest, Prepared
from sglang_ppd.router.route_choice import NoRoute, choose_route
from sglang_ppd.router.security import check_rid
from sglang_ppd.router.service import Router

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


class _Finish:
    """Accounting once a request has produced its first token."""

    @staticmethod
    def record(
        router: Router,
        att: Attempt,
        arrival_s: float,
        turn_class: str,
        session: str | None,
        output_len: int | None,
        streamed: bool,
    ) -> None:
        m = router.metrics
        if att.route.kind is RouteKind.PD:
            m.kv_bytes_transferred += att.kv_bytes
        else:
            m.kv_bytes_avoided += att.kv_bytes
        router.sessions.remember(session, att.decode_url)
        router.prefix.remember_prompt(att.urls(), att.prep.input_ids)
        if not streamed or att.first_token_s is None:
            return
        end = time.monotonic()
        tpot = (
            (end - att.first_token_s) / (output_len - 1)
            if output_len is not None and output_len > 1
            else None
        )
        m.record_finish(
            turn_class,
            att.first_token_s - arrival_s,
            tpot,
            router.slo.ttft_ms / 1000.0,
            router.slo.tpot_ms / 1000.0,
        )


def _count_upstream_error(router: Router, f: UpstreamFailure) -> None:
    """Failures of the workers to blame; a worker's own 4xx is an answer, not an upstream error."""
    if f.retryable or f.status >= 500:
        for url in f.workers:
            w = router.registry.get(url)
            router.metrics.upstream_errors[w.name if w is not None else url] += 1


def _failure_response(f: UpstreamFailure) -> web.Response:
    if f.body is not None and 400 <= f.status < 500:
        return web.Response(status=f.status, body=f.body, content_type="application/json")
    return error_response(f.status if f.status >= 500 else 502, str(f))


def _completion_tokens(obj: dict[str, Any] | None) -> int | None:
    if not isinstance(obj, dict):
        return None
    meta = obj.get("meta_info")
    value = meta.get("completion_tokens") if isinstance(meta, dict) else None
    return value if isinstance(value, int) else None


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
    arrival = time.monotonic()
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
            _count_upstream_error(router, f)
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
        await att.finish()
        out_len = _completion_tokens(parsed if parsed is not None else None)
        _Finish.record(router, att, arrival, turn_class, session, out_len, streamed=False)
        if api == "generate":
            return web.Response(body=raw, content_type="application/json", headers=headers)
        gen = parsed if parsed is not None else orjson.loads(raw)
        return json_response(
            openai_format.full_response(
                gen, api == "chat", rid, router.model_name, len(prep.input_ids), prep.return_token_ids
            ),
            headers=headers,
        )
    return await _stream(
        request, router, att, first or b"", api, include_usage, arrival, turn_class, session, headers
    )


async def _stream(
    request: web.Request,
    router: Router,
    att: Attempt,
    first: bytes,
    api: str,
    include_usage: bool,
    arrival: float,
    turn_class: str,
    session: str | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    conv = (
        None
        if api == "generate"
        else openai_format.StreamConverter(
            api == "chat",
            att.rid,
            router.model_name,
            len(att.prep.input_ids),
            include_usage,
            att.prep.return_token_ids,
        )
    )
    last_obj: bytes = b""
    guard = SlowReaderGuard(request, router.cfg.write_timeout_s, router.metrics)
    try:
        await resp.prepare(request)
        line: bytes | None = first
        while line is not None:
            if line != b"data: [DONE]":
                last_obj = line
            if conv is None:
                await resp.write(line + b"\n\n")
            elif line != b"data: [DONE]":
                await resp.write(conv.chunk(orjson.loads(line[5:])))
            guard.progressed()
            line = await att.next_line()
        if conv is not None:
            await resp.write(conv.done())
    except UpstreamFailure as f:
        await att.failed(f)
        _count_upstream_error(router, f)
        err = {
            "error": {
                "message": f"{f} (after the first token; not retried)",
                "type": "upstream_error",
                "code": f.status,
            }
        }
        with contextlib.suppress(ConnectionError):
            await resp.write(b"data: " + orjson.dumps(err) + b"\n\ndata: [DONE]\n\n")
    except (ConnectionError, asyncio.CancelledError):
        log.debug("client of %s went away; aborting upstream", att.rid)  # routine: a user's Ctrl-C
        await att.abort()
        raise
    except BaseException:
        await att.abort()
        raise
    else:
        await att.finish()
    finally:
        guard.close()
    out_len = None
    if conv is not None:
        out_len = _completion_tokens({"meta_info": conv.last_meta})
    elif last_obj:
        try:
            out_len = _completion_tokens(orjson.loads(last_obj[5:]))
        except orjson.JSONDecodeError:
            out_len = None
    _Finish.record(router, att, arrival, turn_class, session, out_len, streamed=True)
    return resp
