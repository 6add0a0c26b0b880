"""Test support for the reliability tests (no tests here): an in-process router over emulated workers
(the ``emulated_worker`` fixture starts them) and a streaming client that classifies every
outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from test_router_support import PROFILE

from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import Policy, load_policy
from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer


async def router_over(
    workers: list[Any], policy: str | Policy = "ppd_deflect", **cfg: Any
) -> tuple[Router, web.AppRunner, str]:
    specs = [
        {"url": w.url, "role": w.role, **({"bootstrap_port": w.bootstrap_port} if w.bootstrap_port else {})}
        for w in workers
    ]
    config = RouterConfig.model_validate(
        {"port": 0, "workers": specs, "health_interval_s": 0.5, "profile": "h100-llama31-8b", **cfg}
    )
    if isinstance(policy, str):
        pol = load_policy(policy, {}, load_profile(config.profile))
        name = policy
    else:
        pol, name = policy, "scripted"
    router = Router(config, pol, PROFILE, ByteTokenizer(), name)
    runner, port = await start_server(router, "127.0.0.1", 0)
    return router, runner, f"http://127.0.0.1:{port}"


@dataclass
class Outcome:
    """One client request as the client saw it."""

    status: int | None = None
    route: str | None = None
    num_tokens: int = 0
    done: bool = False
    """The stream ended with ``data: [DONE]``."""
    error_before_first_token: bool = False
    """A non-200 JSON error the client can retry (nothing was generated)."""
    error_event: bool = False
    """An error event after the first token, then ``[DONE]``."""
    hung: bool = False
    exception: str | None = None
    last_text: str = ""

    @property
    def completed(self) -> bool:
        return self.status == 200 and self.done and not self.error_event and self.num_tokens > 0


async def stream_request(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float
) -> Outcome:
    out = Outcome()
    try:
        async with asyncio.timeout(timeout_s):
            async with s.post(f"{url}/generate", json={**body, "stream": True}, headers=headers) as r:
                out.status, out.route = r.status, r.headers.get("x-ppd-route")
                if r.status != 200:
                    err = orjson.loads(await r.read())
                    out.error_before_first_token = isinstance(err.get("error"), dict)
                    return out
                async for raw in r.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        out.done = True
                        continue
                    obj = orjson.loads(data)
                    if "error" in obj:
                        out.error_event = True
                    else:
                        out.num_tokens = obj["meta_info"]["completion_tokens"]
                        out.last_text = obj["text"]
    except TimeoutError:
        out.hung = True
    except (aiohttp.ClientError, ValueError) as exc:
        out.exception = repr(exc)
    return out
