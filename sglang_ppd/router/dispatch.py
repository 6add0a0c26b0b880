"""The data plane: send one routed request upstream, exactly as sglang_router / mini_lb do.

PD: the same body, with ``bootstrap_host`` / ``bootstrap_port`` / ``bootstrap_room`` (a random 63-bit
room), is POSTed to the prefill and the decode worker concurrently; the decode reply is the answer,
with the prefill's ``input_token_logprobs`` prepended when ``return_logprob`` is set. Local and
deflected routes POST only to the decode worker, with ``do_local_prefill`` (and ``ppd_chunk_len``,
``ppd_route``). Every attempt carries an ``rid`` so it can be cancelled with SGLang's
``/abort_request``. Failures before the first token raise :class:`UpstreamFailure` (the caller may
retry on another route); a prefill that fails aborts its decode side and vice versa.

This module holds the wire: the upstream body, and :class:`Upstream`, the one client API an attempt
uses (post, read a line, read all within caps, abort) over the pooled connections of
:mod:`sglang_ppd.router.upstream`. :mod:`sglang_ppd.router.attempt` holds one routed attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from sglang_ppd.core.types import Route as CoreRoute
from sglang_ppd.core.types import RouteKind
from sglang_ppd.protocol import fields
from sglang_ppd.router.requests import Prepared
from sglang_ppd.router.upstream import Response, UpstreamConnectError, UpstreamError, UpstreamTimeout
from sglang_ppd.router.upstream_pool import Pool

if TYPE_CHECKING:  # the router owns the Upstream: a type only
    from sglang_ppd.router.service import Router

log = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 * 1024 * 1024
"""Largest whole (non-streamed) upstream reply held in memory; streamed lines are capped apart."""
MAX_LINE_BYTES = 64 * 1024 * 1024
"""Largest streamed SSE line (cumulative ``output_ids`` make long ones)."""


class UpstreamFailure(Exception):
    def __init__(
        self,
        message: str,
        workers: tuple[str, ...],
        status: int = 502,
        body: bytes | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.workers, self.status, self.body, self.retryable = workers, status, body, retryable


def upstream_body(router: Router, prep: Prepared, route: CoreRoute, rid: str) -> dict[str, Any]:
    body = {**prep.body, "rid": rid}
    if route.kind is RouteKind.PD:
        assert route.prefill_worker is not None
        p = router.registry.get(route.prefill_worker)
        assert p is not None
        body[fields.BOOTSTRAP_HOST] = p.host
        body[fields.BOOTSTRAP_PORT] = p.bootstrap_port or router.cfg.default_bootstrap_port
        body[fields.BOOTSTRAP_ROOM] = random.getrandbits(63)
    else:
        body[fields.LOCAL_PREFILL] = True
        d = router.registry.get(route.decode_worker)
        if d is not None and d.info is not None and d.info.upstream_local_prefill:
            return body  # a stock server with upstream's conditional aggregation knows only this field
        body[fields.ROUTE_KIND] = route.kind.value
        if route.chunk_plan is not None:
            body[fields.LOCAL_PREFILL_CHUNK_LEN] = route.chunk_plan.chunk_len
    return body


class Upstream:
    """The data path's one upstream client API: post, read a line, read all, abort. Every failure
    comes out as an :class:`UpstreamFailure` naming the worker; a refused connection (nothing
    listens: the process is gone) is also reported to ``on_refused`` at once."""

    def __init__(
        self,
        pool: Pool,
        control: Callable[[], aiohttp.ClientSession],
        keep: Callable[[asyncio.Task[None]], None],
        on_refused: Callable[[str], None],
    ) -> None:
        self.pool, self._control, self._keep, self._on_refused = pool, control, keep, on_refused

    async def post(
        self,
        url: str,
        payload: bytes,
        deadline: float | None,
        attach: Callable[[Response], None] | None = None,
    ) -> Response:
        """``POST /generate``; the reply once its headers are in (a non-200 reply is a failure)."""
        try:
            resp = await self.pool.post(url, "/generate", payload, deadline, attach)
        except UpstreamTimeout:
            raise UpstreamFailure(f"timed out waiting for {url}'s reply", (url,), status=504) from None
        except UpstreamConnectError as exc:
            self._on_refused(url)
            raise UpstreamFailure(str(exc), (url,)) from None
        except UpstreamError as exc:
            raise UpstreamFailure(f"request to {url} failed: {exc!r}", (url,)) from None
        status = resp.status  # read before release(), which readies the connection for its next reply
        if status != 200:
            try:
                body = await self.read_all(resp, url, deadline)
            finally:
                resp.release()
            raise UpstreamFailure(
                f"{url} answered HTTP {status}", (url,), status=status, body=body, retryable=status >= 500
            )
        return resp

    @staticmethod
    async def read_all(
        resp: Response,
        url: str,
        deadline: float | None = None,
        on_error: Callable[[UpstreamError], UpstreamFailure] | None = None,
    ) -> bytes:
        """A whole reply, at most ``MAX_REPLY_BYTES`` (``on_error`` maps a broken read to a
        failure, when the caller knows better)."""
        try:
            return await resp.read_all(MAX_REPLY_BYTES, deadline)
        except ValueError:
            msg = f"the reply of {url} exceeds {MAX_REPLY_BYTES} bytes"
            raise UpstreamFailure(msg, (url,), retryable=False) from None
        except UpstreamError as exc:
            if on_error is not None:
                raise on_error(exc) from None
            raise UpstreamFailure(f"reading the reply of {url} failed: {exc!r}", (url,)) from None

    @staticmethod
    async def read_line(resp: Response, deadline: float | None) -> bytes | None:
        """The next ``data:`` line of an SSE reply (stripped), or ``None`` at the end. Raises
        ``UpstreamError`` (broken, timed out) or ``ValueError`` (a line over ``MAX_LINE_BYTES``)."""
        while True:
            line = await resp.readline(deadline, MAX_LINE_BYTES)
            if not line:
                return None
            line = line.strip()
            if line.startswith(b"data:"):
                return line

    def abort(self, urls: tuple[str, ...], rid: str) -> None:
        """Fire-and-forget ``/abort_request`` so a dead attempt frees its KV reservation."""

        async def one(url: str) -> None:
            try:
                async with self._control().post(f"{url}/abort_request", json={"rid": rid}) as resp:
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.debug("abort of %s on %s failed: %s", rid, url, exc)

        for url in urls:
            self._keep(asyncio.create_task(one(url)))

    def close(self) -> None:
        self.pool.close()
