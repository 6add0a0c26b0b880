"""A streamed reply: the attempt's SSE lines relayed to the client as they come (as SGLang sends
them, or converted to OpenAI chunks), under the front door's slow-reader guard.

A failure after the first token is not retried: the stream ends with an error event
(``data: {"error": {...}}`` then ``data: [DONE]``). A client that goes away (or is cut for not
reading) gets the attempt aborted upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiohttp import web

from sglang_ppd.router import openai_format
from sglang_ppd.router.attempt import Attempt
from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.front_door import SlowReaderGuard
from sglang_ppd.router.outcome import Ending, completion_tokens, count_upstream_error, record_finish
from sglang_ppd.router.service import Router

log = logging.getLogger(__name__)


async def stream_reply(
    request: web.Request,
    router: Router,
    att: Attempt,
    first: bytes,
    api: str,
    include_usage: bool,
    ending: Ending,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Relay the attempt's stream from its ``first`` line on, end the attempt (finished, failed or
    aborted), and record the request's outcome (:func:`~sglang_ppd.router.outcome.record_finish`)."""
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
        count_upstream_error(router, f)
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
        att.finish()
    finally:
        guard.close()
    out_len = None
    if conv is not None:
        out_len = completion_tokens({"meta_info": conv.last_meta})
    elif last_obj:
        try:
            out_len = completion_tokens(orjson.loads(last_obj[5:]))
        except orjson.JSONDecodeError:
            out_len = None
    record_finish(router, att, ending, out_len, streamed=True)
    return resp
