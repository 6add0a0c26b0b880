"""OpenAI ``/v1/completions`` and ``/v1/chat/completions`` on the emulated worker (token-id level).

Prompts may be text (byte-tokenized) or token ids, as SGLang accepts. Chat messages go through a
fixed plain-text template, since an emulated worker has no model chat template.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sglang_ppd.emulator import parse, tokens
from sglang_ppd.emulator.httpio import ENGINE_KEY, error_response, json_response, read_json, stream_sse
from sglang_ppd.emulator.request import GenerateInput, RequestError, RequestHandle


def chat_template(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    parts = []
    for m in messages:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise RequestError("each message needs a string 'role' and a string 'content'")
        parts.append(f"<|{m['role']}|>\n{m['content']}\n")
    return "".join(parts) + "<|assistant|>\n"


def usage(handle: RequestHandle) -> dict[str, Any]:
    n_in, n_out = len(handle.inp.input_ids), len(handle.output_ids)
    return {
        "prompt_tokens": n_in,
        "completion_tokens": n_out,
        "total_tokens": n_in + n_out,
        "prompt_tokens_details": {"cached_tokens": handle.cached_tokens},
    }


def _finish_reason(handle: RequestHandle) -> str | None:
    if not handle.finished:
        return None
    return "length" if handle.error is None else "abort"


async def _serve(
    request: web.Request, body: dict[str, Any], inp: GenerateInput, chat: bool
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    handle = engine.submit(inp)
    created = int(time.time())
    model = body.get("model") or engine.model_name
    obj = "chat.completion" if chat else "text_completion"
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sent = {"n": 0}

        def chunks(h: RequestHandle) -> list[dict[str, Any]]:
            delta = tokens.decode(h.output_ids[sent["n"] :])
            sent["n"] = len(h.output_ids)
            choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(h), "logprobs": None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": delta}
            else:
                choice["text"] = delta
            kind = obj + (".chunk" if chat else "")
            base = {"id": h.inp.rid, "object": kind, "created": created, "model": model}
            out = [{**base, "choices": [choice]}]
            if h.finished and include_usage:
                out.append({**base, "choices": [], "usage": usage(h)})
            return out

        return await stream_sse(request, handle, chunks)
    try:
        await handle.wait_finished()
    finally:
        if not handle.finished:
            engine.abort(inp.rid)
    if handle.error is not None:
        return error_response(handle.error, 500)
    text = handle.text
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(handle), "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body_out = {"id": inp.rid, "object": obj, "created": created, "model": model, "choices": [choice]}
    return json_response({**body_out, "usage": usage(handle)})


async def completions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = await read_json(request)
    ids = parse.prompt_ids(body, "prompt", None)
    inp = parse.openai_input(body, engine.role, engine.ppd, ids, engine.cfg.conditional_agg)
    return await _serve(request, body, inp, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = await read_json(request)
    ids = tuple(tokens.encode(chat_template(body.get("messages"))))
    inp = parse.openai_input(body, engine.role, engine.ppd, ids, engine.cfg.conditional_agg)
    return await _serve(request, body, inp, chat=True)
