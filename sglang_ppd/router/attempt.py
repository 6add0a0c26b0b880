"""One routed attempt: the PD pair or the local decode worker it was sent to, read to the end.

An :class:`Attempt` dispatches the upstream body (:mod:`sglang_ppd.router.dispatch`), waits for the
decode side's reply under a first-token deadline that scales with the prompt and the prefill queue,
reads the reply whole or as an SSE stream (merging the prefill side's input logprobs), and aborts
both sides upstream when it is abandoned.

Its phases and its hold on each worker are an :class:`~sglang_ppd.router.attempt_state.AttemptState`
(the state machine: dispatch, first token, streaming, then finish, fail or abort); this module does
the I/O and moves it from phase to phase. Its leases are taken from the workers' state objects at
dispatch (never looked up again by URL, so a worker removed and re-added meanwhile keeps its own
counts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from sglang_ppd.core.types import Route as CoreRoute
from sglang_ppd.core.types import RouteKind
from sglang_ppd.router.attempt_state import AttemptState, Phase
from sglang_ppd.router.dispatch import UpstreamFailure, upstream_body
from sglang_ppd.router.requests import Prepared
from sglang_ppd.router.service import Router
from sglang_ppd.router.upstream import Response, UpstreamError, UpstreamTimeout
from sglang_ppd.router.workers import WorkerState

log = logging.getLogger(__name__)


def first_token_timeout_s(router: Router, prep: Prepared, route: CoreRoute) -> float:
    """How long an attempt may wait for its first token: ``first_token_timeout_s`` plus
    ``first_token_timeout_per_ktok_s`` per 1,000 tokens of this prompt and of the prefill queue the
    worker that prefills it last reported (so a long prompt behind a long queue is not cut short),
    never past ``request_timeout_s`` (the queue is the worker's claim, checked but not trusted)."""
    cfg = router.cfg
    w = router.registry.get(route.prefill_worker or route.decode_worker)
    sample = w.sample if w is not None else None
    queued = (sample.queued_prefill_tokens or 0) if sample is not None else 0
    ktok = (len(prep.input_ids) + queued) / 1000
    return min(cfg.first_token_timeout_s + cfg.first_token_timeout_per_ktok_s * ktok, cfg.request_timeout_s)


def _merge_logprobs(prefill: dict[str, Any] | None, decode: dict[str, Any]) -> dict[str, Any]:
    try:
        p_lp = prefill["meta_info"]["input_token_logprobs"]  # type: ignore[index]
        d_meta = decode["meta_info"]
        d_meta["input_token_logprobs"] = p_lp + (d_meta.get("input_token_logprobs") or [])
    except (KeyError, TypeError):
        pass
    return decode


class Attempt:
    """One routed attempt: its upstream responses, in-flight accounting and cleanup.

    Deadlines are ``loop.time()`` instants: until the first token the attempt's first-token
    deadline (:func:`first_token_timeout_s`) bounds every read, with no shorter idle timeout; after it
    each streamed read may wait ``read_timeout_s``.
    """

    def __init__(self, router: Router, prep: Prepared, route: CoreRoute, rid: str) -> None:
        self.router, self.prep, self.route, self.rid = router, prep, route, rid
        self.decode_url = route.decode_worker
        self.prefill_url = route.prefill_worker
        prefill_w = None if route.prefill_worker is None else self._worker(route.prefill_worker)
        self.state = AttemptState(
            rid,
            self._worker(route.decode_worker),
            prefill_w,
            route.kind is not RouteKind.PD,
            len(prep.input_ids),
            prep.max_new_tokens,
            router.reliability.after_failure,
        )
        self.kv_bytes = len(prep.input_ids) * router.profile.kv_bytes_per_token
        self.decode_resp: Response | None = None
        self._pending: Response | None = None
        self.prefill_task: asyncio.Task[dict[str, Any] | None] | None = None
        self.first_token_s: float | None = None
        self.dispatch_s = time.monotonic()
        self._transfer_counted = False
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + first_token_timeout_s(router, prep, route)
        self._abandoned: UpstreamFailure | None = None

    def _worker(self, url: str) -> WorkerState:
        w = self.router.registry.get(url)
        assert w is not None, "route_choice only returns registered workers"
        return w

    def urls(self) -> tuple[str, ...]:
        return (self.decode_url,) if self.prefill_url is None else (self.prefill_url, self.decode_url)

    def _timeout(self) -> UpstreamFailure:
        """The first token did not come in time. A prefill side that already answered is not to
        blame: the decode side is (a stopped decode must not open a healthy prefill's breaker)."""
        what = "the first token" if self.prep.stream else "the worker's reply"
        task = self.prefill_task
        prefill_done = task is None or (task.done() and not task.cancelled() and task.exception() is None)
        blame = (self.decode_url,) if prefill_done else self.urls()
        return UpstreamFailure(f"timed out waiting for {what}", blame, status=504)

    async def _prefill(self, payload: bytes) -> dict[str, Any] | None:
        """The prefill side: its status, and its first reply object when logprobs are merged."""
        assert self.prefill_url is not None
        url = self.prefill_url
        resp = await self.router.upstream.post(url, payload, self._deadline)
        try:
            if self.prep.stream:
                try:
                    first = await self.router.upstream.read_line(resp, self._deadline)
                    await resp.drain(self._loop.time() + self.router.cfg.request_timeout_s)
                except (UpstreamError, ValueError) as exc:
                    raise UpstreamFailure(f"prefill stream from {url} broke: {exc!r}", (url,)) from None
                data = first[5:].strip() if first else b""
                return orjson.loads(data) if self.prep.return_logprob and data and data != b"[DONE]" else None
            raw = await self.router.upstream.read_all(resp, url, self._deadline)
            return orjson.loads(raw) if self.prep.return_logprob else None
        finally:
            resp.release()

    def _attach(self, resp: Response) -> None:
        self._pending = resp  # until its headers are in: only to cut it (decode_resp is set after)
        if self._abandoned is not None:
            resp.set_exception(self._abandoned)

    async def open(self) -> None:
        """Dispatch and wait for the decode side's reply headers. Raises :class:`UpstreamFailure`
        (the caller then calls :meth:`failed`)."""
        payload = orjson.dumps(upstream_body(self.router, self.prep, self.route, self.rid))
        self.state.dispatch()
        if self.prefill_url is not None:
            self.router.pd_transfer_bytes_inflight += self.kv_bytes
            self._transfer_counted = True
            self.prefill_task = asyncio.create_task(self._prefill(payload))
            self.prefill_task.add_done_callback(self._prefill_done)
        try:
            url, deadline = self.decode_url, self._deadline
            self.decode_resp = await self.router.upstream.post(url, payload, deadline, self._attach)
            self._pending = None
        except UpstreamFailure as f:
            self._pending = None
            if self._abandoned is not None:
                raise self._abandoned from None
            if f.status == 504:
                raise self._timeout() from None
            raise

    def _prefill_failure(self) -> UpstreamFailure | None:
        """The prefill side's failure once it has failed (any error becomes an UpstreamFailure)."""
        task = self.prefill_task
        if task is None or not task.done() or task.cancelled() or task.exception() is None:
            return None
        exc = task.exception()
        if isinstance(exc, UpstreamFailure):
            return exc
        assert self.prefill_url is not None
        return UpstreamFailure(f"prefill side {self.prefill_url} failed: {exc!r}", (self.prefill_url,))

    def _abandon(self, failure: UpstreamFailure | None) -> None:
        """Until the first token, a prefill side that fails cuts the decode reply at once (a decode
        waiting for KV that will never come is abandoned now, not at its own transfer timeout)."""
        if failure is None or self.state.phase is not Phase.DISPATCHED or self._abandoned:
            return
        self._abandoned = failure
        resp = self.decode_resp or self._pending
        if resp is not None:
            resp.set_exception(failure)

    def _got_first_token(self) -> None:
        self.first_token_s = time.monotonic()
        self._transfer_done()
        self.state.first_token()

    def _prefill_done(self, task: asyncio.Task[dict[str, Any] | None]) -> None:
        self.state.prefill_finished()
        if not task.cancelled() and task.exception() is not None:
            log.debug("prefill side of %s failed: %s", self.rid, task.exception())
            self._abandon(self._prefill_failure())

    # --- how it ends -----------------------------------------------------------------------------
    def finish(self) -> None:
        """It ended well. A healthy prefill reply still arriving is left to finish on its own
        (bounded by the request timeout) so its pooled connection is reused, not torn down."""
        self.state.finish()
        self._release_io()
        task = self.prefill_task
        if task is not None and not task.done():
            self.router.keep(task)

    async def failed(self, f: UpstreamFailure) -> Phase:
        """It failed with ``f``: the sides to blame get their verdict, both sides are aborted
        upstream. Returns its phase: ``FAILED_RETRYABLE`` when the request may try another route."""
        phase = self.state.fail(f)
        await self._abandon_upstream()
        return phase

    async def abort(self) -> None:
        """Abandon it with no verdict (its client left or was cut, or the router gave up): both
        sides aborted upstream. Nothing to do once it has ended (a client may leave at any await)."""
        if not self.state.live:
            return
        sent = self.state.phase is not Phase.PREPARED
        self.state.abort()
        if sent:
            await self._abandon_upstream()

    def retried(self) -> None:
        """The request went on to another attempt after this one failed retryable."""
        self.state.retried()

    async def _abandon_upstream(self) -> None:
        self.router.upstream.abort(self.urls(), self.rid)
        self._release_io()
        task = self.prefill_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _release_io(self) -> None:
        self._transfer_done()
        if self.decode_resp is not None:
            self.decode_resp.release()

    def _transfer_done(self) -> None:
        if self._transfer_counted:
            self.router.pd_transfer_bytes_inflight -= self.kv_bytes
            self._transfer_counted = False

    async def prefill_json(self) -> dict[str, Any] | None:
        if self.prefill_task is None:
            return None
        try:
            return await self.prefill_task
        except UpstreamFailure:
            return None

    def _read_failure(self, exc: BaseException, what: str) -> UpstreamFailure:
        if self._abandoned is not None:
            return self._abandoned
        if isinstance(exc, UpstreamTimeout) and self.first_token_s is None:
            return self._timeout()
        return UpstreamFailure(f"{what} {self.decode_url} broke: {exc!r}", (self.decode_url,))

    # --- non-streaming ---------------------------------------------------------------------------
    async def whole(self) -> tuple[bytes, dict[str, Any] | None]:
        """The decode reply body (raw), and its parsed form when it had to be parsed (logprob merge)."""
        assert self.decode_resp is not None
        deadline = max(self._deadline, self._loop.time() + self.router.cfg.read_timeout_s)

        def broke(exc: UpstreamError) -> UpstreamFailure:
            return self._read_failure(exc, "reading the reply of")

        raw = await self.router.upstream.read_all(self.decode_resp, self.decode_url, deadline, broke)
        self._got_first_token()
        if self.prep.return_logprob and self.prefill_task is not None:
            merged = _merge_logprobs(await self.prefill_json(), orjson.loads(raw))
            return orjson.dumps(merged), merged
        return raw, None

    # --- streaming -------------------------------------------------------------------------------
    async def next_line(self) -> bytes | None:
        """The next ``data:`` line from the decode side (logprobs merged), ``None`` at the end.

        Raises :class:`UpstreamFailure` on a broken or silent stream.
        """
        assert self.decode_resp is not None
        if self.first_token_s is None:
            deadline = self._deadline
        else:
            deadline = self._loop.time() + self.router.cfg.read_timeout_s
        try:
            line = await self.router.upstream.read_line(self.decode_resp, deadline)
        except (UpstreamError, ValueError) as exc:
            raise self._read_failure(exc, "stream from") from None
        if line is None:
            if self._abandoned is not None:
                raise self._abandoned
            return None
        if self.first_token_s is None:
            self._got_first_token()
        elif self.state.phase is Phase.FIRST_TOKEN:
            self.state.streaming()
        if self.prep.return_logprob and self.prefill_task is not None and line != b"data: [DONE]":
            merged = _merge_logprobs(await self.prefill_json(), orjson.loads(line[5:]))
            return b"data: " + orjson.dumps(merged)
        return line
