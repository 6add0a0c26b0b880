"""One streamed generation over HTTP, timed on the client: SGLang ``/generate`` or OpenAI
``/v1/completions``, both on token ids.

SGLang streams ``output_ids`` cumulatively by default and as deltas with
``--incremental-streaming-output``; ``meta_info.completion_tokens`` tells the two apart. OpenAI
completions return token ids only where the server supports ``return_token_ids`` (SGLang, vLLM);
elsewhere only the count from ``usage`` is known.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ROUTE_HEADER = "x-ppd-route"
REASON_HEADER = "x-ppd-reason"
SESSION_HEADER = "x-ppd-session-id"
TURN_HEADER = "x-ppd-turn"
"""Session hints for our router (its stats split Turn 1 / Turn 2+ with them); other servers ignore them."""
# Errors that mean the pooled keep-alive connection was closed by the server before it read the
# request: retrying on a fresh connection is safe then.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError)


class Api(str, enum.Enum):
    SGLANG = "sglang"
    OPENAI = "openai"


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request; times on the caller's clock (seconds)."""

    send_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    num_output: int = 0
    output_ids: list[int] | None = None
    """The generated ids, or ``None`` when the API did not return them."""
    itl_ms: list[float] = field(default_factory=list)
    route: str | None = None
    reason: str | None = None
    cached_len: int = 0
    error: str | None = None


def request_body(api: Api, input_ids: list[int], max_new_tokens: int, model: str | None) -> dict[str, Any]:
    # ignore_eos makes the server generate exactly the workload's output length.
    if api is Api.SGLANG:
        sampling = {"max_new_tokens": max_new_tokens, "ignore_eos": True, "temperature": 0.0}
        return {"input_ids": input_ids, "sampling_params": sampling, "stream": True}
    return {
        "model": model or "default",
        "prompt": input_ids,
        "max_tokens": max_new_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


async def served_model(session: aiohttp.ClientSession, url: str, timeout_s: float = 10.0) -> str | None:
    """The first model id of ``GET /v1/models``, or ``None`` when the endpoint does not say."""
    try:
        async with session.get(
            url.rstrip("/") + "/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as r:
            data = await r.json(content_type=None) if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
        return None
    models = data.get("data") if isinstance(data, dict) else None
    if isinstance(models, list) and models and isinstance(models[0], dict):
        model_id = models[0].get("id")
        return model_id if isinstance(model_id, str) else None
    return None


class _Stream:
    """Folds SSE chunks into an :class:`Outcome`."""

    def __init__(self, api: Api, out: Outcome) -> None:
        self.api, self.out = api, out
        self.last_token_s: float | None = None
        self.responded = False

    def tokens_arrived(self, now: float, count: int) -> None:
        if count <= 0:
            return
        if self.out.first_token_s is None:
            self.out.first_token_s = now
        elif self.last_token_s is not None:
            self.out.itl_ms.append(1000.0 * (now - self.last_token_s))
        self.last_token_s = now

    def feed(self, chunk: dict[str, Any], now: float) -> None:
        if "error" in chunk:
            err = chunk["error"]
            self.out.error = str(err.get("message", err) if isinstance(err, dict) else err)
            return
        if self.api is Api.SGLANG:
            self._feed_sglang(chunk, now)
        else:
            self._feed_openai(chunk, now)

    def _feed_sglang(self, chunk: dict[str, Any], now: float) -> None:
        out = self.out
        meta = chunk.get("meta_info") or {}
        completion = meta.get("completion_tokens")
        ids = chunk.get("output_ids")
        before = out.num_output
        if isinstance(ids, list):
            acc = out.output_ids
            if acc is None or (completion == len(ids) and completion >= len(acc)):
                acc = out.output_ids = ids  # the first chunk, or a cumulative one (a fresh list)
            else:
                acc.extend(ids)
            out.num_output = len(acc)
        elif isinstance(completion, int):
            out.num_output = max(completion, before)
        cached = meta.get("cached_tokens")
        if cached:
            out.cached_len = int(cached)
        finish = meta.get("finish_reason")
        if isinstance(finish, dict) and finish.get("type") == "abort":
            out.error = f"aborted: {finish.get('message', '')}"
        self.tokens_arrived(now, out.num_output - before)

    def _feed_openai(self, chunk: dict[str, Any], now: float) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            details = usage.get("prompt_tokens_details") or {}
            self.out.cached_len = int(details.get("cached_tokens") or 0)
            if self.out.output_ids is None:
                self.out.num_output = usage["completion_tokens"]
        for choice in chunk.get("choices") or ():
            ids = choice.get("token_ids")
            if isinstance(ids, list):
                self.out.output_ids = (self.out.output_ids or []) + ids
                self.out.num_output = len(self.out.output_ids)
                self.tokens_arrived(now, len(ids))
            elif choice.get("text"):
                # Without ids a text chunk counts as one token for timing; usage gives the total.
                self.out.num_output += 1
                self.tokens_arrived(now, 1)
            if choice.get("finish_reason") == "abort":
                self.out.error = "aborted by the server"


async def generate(
    session: aiohttp.ClientSession,
    url: str,
    api: Api,
    input_ids: list[int],
    max_new_tokens: int,
    *,
    model: str | None = None,
    timeout_s: float = 300.0,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """Send one streamed request and time it; never raises for HTTP or server errors."""
    endpoint = url.rstrip("/") + ("/generate" if api is Api.SGLANG else "/v1/completions")
    body = orjson.dumps(request_body(api, input_ids, max_new_tokens, model))
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    out = Outcome(send_s=time.perf_counter())
    stream = _Stream(api, out)

    async def attempts() -> None:
        for attempt in range(2):
            try:
                async with session.post(endpoint, data=body, headers=hdrs) as resp:
                    await _read(resp, stream)
                return
            except _STALE_CONNECTION:
                if attempt == 1 or stream.responded:
                    raise

    try:
        await asyncio.wait_for(attempts(), timeout_s)
    except asyncio.TimeoutError:
        out.error = f"timeout after {timeout_s:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    if out.error is None and out.first_token_s is None:
        out.error = "stream ended without output tokens"
    if out.error is None:
        out.finish_s = time.perf_counter()
    return out


async def _read(resp: aiohttp.ClientResponse, stream: _Stream) -> None:
    out = stream.out
    stream.responded = True
    out.route = resp.headers.get(ROUTE_HEADER)
    out.reason = resp.headers.get(REASON_HEADER)
    if resp.status != 200:
        text = (await resp.text(errors="replace"))[:300]
        out.error = f"HTTP {resp.status}: {text}"
        return
    # Frame SSE events from raw reads: one call per network read rather than two per event (the
    # data line and the blank line) keeps the per-token cost down. Events read together arrived
    # together, so they share a time.
    buf = b""
    async for data in resp.content.iter_any():
        now = time.perf_counter()
        buf += data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *events, buf = buf.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                chunk = orjson.loads(payload)
                if isinstance(chunk, dict):
                    stream.feed(chunk, now)
                if out.error is not None:
                    return
