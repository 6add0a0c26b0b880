"""One routed attempt: the PD pair or the local decode worker it was sent to, read to the end.

An :class:`Attempt` dispatches the upstream body (:mod:`sglang_ppd.router.dispatch`), waits for the
decode side's reply under a first-token deadline that scales with the prompt and the prefill queue,
reads the reply whole or as an SSE stream (merging the prefill side's input logprobs), and aborts
both sides upstream when it is abandoned.

Its hold on each worker is a :class:`~sglang_ppd.router.workers.Lease` taken from that worker's
state object at dispatch (never looked up again by URL, so a worker removed and re-added meanwhile
keeps its own counts). The attempt reports each side's verdict to its lease: success at the first
token (or whole reply), failure only for the side to blame (:meth:`Attempt.blame`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from sglang_ppd.core.types import Route as CoreRoute
from sglang_ppd.core.types import RouteKind
from sglang_ppd.router.dispatch import UpstreamFailure, upstream_body
from sglang_ppd.router.requests import Prepared
from sglang_ppd.router.service import Router
from sglang_ppd.router.upstream import Response, UpstreamError, UpstreamTimeout
from sglang_ppd.router.workers import Lease, WorkerState

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
        self.decode_w = self._worker(route.decode_worker)
        self.prefill_w = None if route.prefill_worker is None else self._worker(route.prefill_worker)
        # Dispatched from here on: the leases are released by close(), whatever happens.
        prompt_len, output_len = len(prep.input_ids), prep.max_new_tokens
        local = route.kind is not RouteKind.PD
        self.decode_lease = self.decode_w.dispatch(rid, local, prompt_len, output_len)
        self.prefill_lease = (
            None if self.prefill_w is None else self.prefill_w.dispatch(rid, False, prompt_len, output_len)
        )
        self.leases: list[Lease] = [x for x in (self.decode_lease, self.prefill_lease) if x is not None]
        self.kv_bytes = len(prep.input_ids) * router.profile.kv_bytes_per_token
        self.decode_resp: Response | None = None
        self._pending: Response | None = None
        self.prefill_task: asyncio.Task[dict[str, Any] | None] | None = None
        self.first_token_s: float | None = None
        self.dispatch_s = time.monotonic()
        self._transfer_counted = False
        self._closed = False
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

    # --- verdicts --------------------------------------------------------------------------------
    def succeeded(self) -> None:
        """The first token (or the whole reply) came: every side worked."""
        for lease in self.leases:
            lease.verdict(ok=True)

    def blame(self, f: UpstreamFailure) -> None:
        """Report a failure to the sides in ``f.workers``: a failure they are to blame for, or, for
        a worker's own 4xx (not retryable), an answer (it is alive)."""
        answered = not f.retryable and f.status < 500
        connection_lost = f.body is None and f.status == 502
        for lease in self.leases:
            if lease.worker.url not in f.workers:
                continue
            if answered:
                lease.verdict(ok=True)
            else:
                dropped = lease.verdict(ok=False, connection_lost=connection_lost)
                self.router.reliability.after_failure(lease.worker, dropped, connection_lost)

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
        """Dispatch and wait for the decode side's reply headers."""
        payload = orjson.dumps(upstream_body(self.router, self.prep, self.route, self.rid))
        if self.prefill_w is not None:
            self.router.pd_transfer_bytes_inflight += self.kv_bytes
            self._transfer_counted = True
            self.prefill_task = asyncio.create_task(self._prefill(payload))
            self.prefill_task.add_done_callback(self._prefill_done)
        try:
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
        except BaseException:
            await self.fail()
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
        if failure is None or self.first_token_s is not None or self._closed or self._abandoned:
            return
        self._abandoned = failure
        resp = self.decode_resp or self._pending
        if resp is not None:
            resp.set_exception(failure)

    def _got_first_token(self) -> None:
        self.first_token_s = time.monotonic()
        self._transfer_done()
        self.decode_lease.first_token()

    def _prefill_done(self, task: asyncio.Task[dict[str, Any] | None]) -> None:
        assert self.prefill_lease is not None
        self.prefill_lease.release()
        if not task.cancelled() and task.exception() is not None:
            log.debug("prefill side of %s failed: %s", self.rid, task.exception())
            self._abandon(self._prefill_failure())

    async def fail(self) -> None:
        """Abandon this attempt: abort both sides upstream and release every resource (once)."""
        if self._closed:
            return
        self.router.upstream.abort(self.urls(), self.rid)
        await self.close(cancel_prefill=True)

    def _transfer_done(self) -> None:
        if self._transfer_counted:
            self.router.pd_transfer_bytes_inflight -= self.kv_bytes
            self._transfer_counted = False

    async def close(self, cancel_prefill: bool = False) -> None:
        """Release the decode side. A healthy prefill reply still arriving is left to finish on its
        own (bounded by the request timeout) so its pooled connection is reused, not torn down."""
        if self._closed:
            return
        self._closed = True
        self._transfer_done()
        self.decode_lease.release()
        if self.prefill_lease is not None and self.prefill_task is None:
            self.prefill_lease.release()  # open() never started the prefill side
        if self.decode_resp is not None:
            self.decode_resp.release()
        task = self.prefill_task
        if task is not None and not task.done():
            if cancel_prefill:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            else:
                self.router.keep(task)

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
        if self.prep.return_logprob and self.prefill_task is not None and line != b"data: [DONE]":
            merged = _merge_logprobs(await self.prefill_json(), orjson.loads(line[5:]))
            return b"data: " + orjson.dumps(merged)
        return line
