"""Shared test fixtures: a fake 1P1D cluster behind an in-process router, and raw loopback sockets
(for what a well-behaved HTTP client never sends: stalled headers, slow bodies, invalid bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from test_router_support import FakeWorker, start_router

from sglang_ppd.core.policy import Policy
from sglang_ppd.router.service import Router


@dataclass
class Cluster:
    router: Router
    url: str
    prefill: FakeWorker
    decode: FakeWorker

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        async with aiohttp.ClientSession() as s, s.post(f"{self.url}{path}", json=body, headers=headers) as r:
            return r.status, await r.read(), dict(r.headers)

    async def get(self, path: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}{path}") as r:
            return r.status, await r.read()


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def pd_cluster() -> AsyncIterator[ClusterFactory]:
    """``await pd_cluster(prefill={...}, decode={...}, policy=None, **router_cfg)``: a fake prefill and
    decode worker (``FakeWorker`` fields) behind a router; everything is stopped at teardown."""
    started: list[tuple[web.AppRunner, list[FakeWorker]]] = []

    async def make(
        prefill: dict[str, Any] | None = None,
        decode: dict[str, Any] | None = None,
        policy: Policy | None = None,
        **cfg: Any,
    ) -> Cluster:
        p = await FakeWorker("prefill", **(prefill or {})).start()
        d = await FakeWorker("decode", **(decode or {})).start()
        router, runner, url = await start_router([p, d], policy, **cfg)
        started.append((runner, [p, d]))
        return Cluster(router, url, p, d)

    yield make
    for runner, workers in started:
        await runner.cleanup()
        for w in workers:
            await w.stop()


RawConnect = Callable[[str], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def raw_connect() -> AsyncIterator[RawConnect]:
    """``await raw_connect(base_url)``: a plain TCP stream to the server; all closed at teardown."""
    writers: list[asyncio.StreamWriter] = []

    async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writers.append(writer)
        return reader, writer

    yield connect
    for w in writers:
        w.close()
