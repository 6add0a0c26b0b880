"""Replays a workload over HTTP: open-loop arrivals, closed-loop sessions, bounded run time.

Each session is one task. Turn k+1's prompt is the real history: turn k's prompt ids plus the
output ids the server actually returned for turn k, plus the new user message (seeded ids). An
open-loop turn (Mooncake) is sent at its arrival time, or when its parent finishes if that is
later (its prompt needs the parent's output); a closed-loop turn a think time after the previous
turn finished. A failed turn ends its session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from sglang_ppd.bench import tokens
from sglang_ppd.bench.client import SESSION_HEADER, TURN_HEADER, Api, Outcome, generate, served_model
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.workload.spec import TurnSpec, Workload

READ_BUFSIZE = 1 << 22
"""Cumulative ``output_ids`` make long SSE lines; aiohttp's default 64 KiB would reject them."""
KEEPALIVE_S = 4.0
"""Below common server idle timeouts (uvicorn 5 s), so a pooled connection is rarely stale."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    url: str
    api: Api = Api.SGLANG
    seed: int = 0
    model: str | None = None
    max_requests: int | None = None
    duration_s: float | None = None
    request_timeout_s: float = 300.0
    vocab_size: int = tokens.DEFAULT_VOCAB_SIZE
    max_connections: int = 0
    """0 = unbounded: an open-loop replay must not queue requests in the client."""


@dataclass(slots=True)
class RunResult:
    records: list[RequestRecord] = field(default_factory=list)
    wall_s: float = 0.0
    num_planned: int = 0
    history_exact: bool = True
    """False when the API returned no output ids, so later prompts carry stand-in ids."""
    model: str | None = None
    client_cpu_s: float = 0.0
    """CPU time of this process during the run: the load generator's own cost."""


def num_planned(workload: Workload, max_requests: int | None) -> int:
    return len(workload) if max_requests is None else min(len(workload), max_requests)


def sessions_of(workload: Workload) -> list[list[TurnSpec]]:
    """Sessions in order of their first arrival (ties: workload order)."""
    groups: dict[str, list[TurnSpec]] = {}
    for t in workload:
        groups.setdefault(t.session_id, []).append(t)
    return sorted(groups.values(), key=lambda s: s[0].arrival_s or 0.0)


class Replay:
    def __init__(self, opts: BenchOptions, on_done: Callable[[RequestRecord], None] | None = None) -> None:
        self.opts = opts
        self.on_done = on_done
        self.result = RunResult()
        self.t0 = 0.0
        self.num_sent = 0
        self.model = opts.model

    def can_send(self) -> bool:
        o = self.opts
        if o.max_requests is not None and self.num_sent >= o.max_requests:
            return False
        return o.duration_s is None or time.perf_counter() - self.t0 < o.duration_s

    async def sleep_until(self, at_s: float) -> None:
        await self.pause(self.t0 + at_s - time.perf_counter())

    async def pause(self, delay_s: float) -> None:
        """Sleep, but not past the end of the run: nothing would be sent after it."""
        if self.opts.duration_s is not None:
            delay_s = min(delay_s, self.t0 + self.opts.duration_s - time.perf_counter())
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    def prompt_ids(self, spec: TurnSpec, prev: tuple[TurnSpec, list[int], Outcome] | None) -> list[int]:
        o = self.opts
        if prev is None:
            shared = tokens.shared_prefix(o.seed, spec.shared_prefix_len, o.vocab_size)
            own = tokens.user_message(o.seed, spec.session_id, 1, spec.input_len - len(shared), o.vocab_size)
            return shared + own
        prev_spec, prev_prompt, prev_out = prev
        output = prev_out.output_ids
        if output is None:
            self.result.history_exact = False
            key = ("output", spec.session_id, str(prev_spec.turn))
            output = tokens.token_ids(o.seed, key, prev_out.num_output, o.vocab_size)
        history = prev_prompt + output
        if spec.history_len < prev_spec.input_len + prev_spec.output_len:
            # The trace says only a prefix of the previous prompt + output is this prompt's history.
            history = history[: spec.history_len]
        new = tokens.user_message(o.seed, spec.session_id, spec.turn, spec.new_len, o.vocab_size)
        return history + new

    async def run_session(self, session: aiohttp.ClientSession, turns: Sequence[TurnSpec]) -> None:
        prev: tuple[TurnSpec, list[int], Outcome] | None = None
        for spec in turns:
            if prev is not None:
                if spec.arrival_s is None:
                    await self.pause(spec.think_time_s)
                else:
                    await self.sleep_until(spec.arrival_s)
            if not self.can_send():
                return
            self.num_sent += 1
            prompt = self.prompt_ids(spec, prev)
            out = await generate(
                session, self.opts.url, self.opts.api, prompt, spec.output_len,
                model=self.model, timeout_s=self.opts.request_timeout_s,
                headers={SESSION_HEADER: spec.session_id, TURN_HEADER: str(spec.turn)},
            )  # fmt: skip
            record = self.record(spec, prompt, out)
            self.result.records.append(record)
            if self.on_done is not None:
                self.on_done(record)
            if out.error is not None:
                return
            prev = (spec, prompt, out)

    def record(self, spec: TurnSpec, prompt: list[int], out: Outcome) -> RequestRecord:
        def rel(t: float | None) -> float | None:
            return None if t is None else t - self.t0

        return RequestRecord(
            request_id=spec.request_id,
            session_id=spec.session_id,
            turn=spec.turn,
            input_len=len(prompt),
            output_len=out.num_output if out.error is None else spec.output_len,
            arrival_s=out.send_s - self.t0,
            first_token_s=rel(out.first_token_s),
            finish_s=rel(out.finish_s),
            route=out.route,
            reason=out.reason,
            cached_len=out.cached_len,
            itl_ms=tuple(out.itl_ms),
            error=out.error,
        )

    async def run(self, workload: Workload, t0: float | None = None) -> RunResult:
        """Replay to the end or the bounds. If cancelled (Ctrl-C), ``self.result`` still holds every
        finished request; the ones in flight are lost. ``t0`` is the ``time.perf_counter()`` of the
        workload's time 0 (default: now), for client processes that share one clock origin."""
        o = self.opts
        self.result.num_planned = num_planned(workload, o.max_requests)
        self.t0 = time.perf_counter()
        connector = aiohttp.TCPConnector(
            limit=o.max_connections, force_close=False, keepalive_timeout=KEEPALIVE_S
        )
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, read_bufsize=READ_BUFSIZE
        ) as http:
            if o.api is Api.OPENAI and self.model is None:
                self.model = await served_model(http, o.url)
            self.t0 = time.perf_counter() if t0 is None else t0
            cpu0 = time.process_time()
            tasks: list[asyncio.Task[None]] = []
            try:
                for turns in sessions_of(workload):
                    await self.sleep_until(turns[0].arrival_s or 0.0)
                    if not self.can_send():
                        break
                    tasks.append(asyncio.create_task(self.run_session(http, turns)))
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.result.client_cpu_s = time.process_time() - cpu0
                self.result.wall_s = time.perf_counter() - self.t0
                self.result.model = self.model
        return self.result
