"""A stub streaming endpoint (SGLang ``/generate`` and OpenAI ``/v1/completions`` on token ids) with
deterministic output ids, fixed pacing and fault injection: for testing and sizing load generators.

``python -m sglang_ppd.bench.stub --port 30000 [--ttft-ms 0] [--itl-ms 0] [--incremental]``
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

MODEL_ID = "stub/model"


@dataclass
class StubConfig:
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    incremental: bool = False
    """Stream ``output_ids`` as deltas (SGLang ``--incremental-streaming-output``), else cumulative."""
    fail_len: int | None = None
    """Requests for exactly this many new tokens get HTTP 500."""
    hang_len: int | None = None
    """Requests for exactly this many new tokens never answer."""
    log: list[tuple[list[int], list[int]]] | None = field(default_factory=list)
    """(prompt ids, output ids) of every request streamed in full (logged just before its end
    marker), in order of completion; ``None``: no log."""
    turns: list[int] | None = field(default_factory=list)
    """The ``x-ppd-turn`` header of every ``/generate`` request that had one; ``None``: no log."""


def stub_output(prompt: list[int], num: int) -> list[int]:
    return [100 + (sum(prompt) + 7 * i) % 20000 for i in range(num)]


def cached_len(cfg: StubConfig, prompt: list[int]) -> int:
    """The longest earlier prompt + output that this prompt starts with, as a prefix cache holding
    every finished conversation would report it (0 without a log)."""
    best = 0
    for p, o in cfg.log or ():
        n = len(p) + len(o)
        if best < n <= len(prompt) and prompt[: len(p)] == p and prompt[len(p) : n] == o:
            best = n
    return best


Chunk = Callable[[list[int], int], dict[str, Any]]


def build_app(cfg: StubConfig) -> web.Application:
    async def stream(request: web.Request, prompt: list[int], num: int, chunk: Chunk) -> web.StreamResponse:
        if num == cfg.fail_len:
            return web.Response(status=500, text="injected failure")
        if num == cfg.hang_len:
            await asyncio.Event().wait()
        out = stub_output(prompt, num)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-ppd-route": "pd"})
        await resp.prepare(request)
        for i in range(1, num + 1):
            delay_ms = cfg.ttft_ms if i == 1 else cfg.itl_ms
            await asyncio.sleep(delay_ms / 1000.0)
            await resp.write(b"data: " + orjson.dumps(chunk(out, i)) + b"\n\n")
        # Logged before the end marker, so a client that saw the end finds its request in the log.
        if cfg.log is not None:
            cfg.log.append((prompt, out))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def generate(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if cfg.turns is not None and "x-ppd-turn" in request.headers:
            cfg.turns.append(int(request.headers["x-ppd-turn"]))

        cached = cached_len(cfg, body["input_ids"])

        def chunk(out: list[int], i: int) -> dict[str, Any]:
            ids = out[i - 1 : i] if cfg.incremental else out[:i]
            return {"output_ids": ids, "meta_info": {"completion_tokens": i, "cached_tokens": cached}}

        return await stream(request, body["input_ids"], body["sampling_params"]["max_new_tokens"], chunk)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body.get("model") != MODEL_ID:
            return web.json_response({"error": {"message": f"model must be {MODEL_ID}"}}, status=404)
        num = body["max_tokens"]
        cached = cached_len(cfg, body["prompt"])

        def chunk(out: list[int], i: int) -> dict[str, Any]:
            c: dict[str, Any] = {"choices": [{"index": 0, "text": "x", "token_ids": out[i - 1 : i]}]}
            if i == num:
                c["usage"] = {"completion_tokens": num, "prompt_tokens_details": {"cached_tokens": cached}}
            return c

        return await stream(request, body["prompt"], num, chunk)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang_ppd.bench.stub", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0)
    p.add_argument("--incremental", action="store_true")
    args = p.parse_args(argv)
    # No logs: they would grow without bound in a long-running server.
    cfg = StubConfig(
        ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, incremental=args.incremental, log=None, turns=None
    )
    web.run_app(build_app(cfg), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
