"""Spread one replay over several client processes, for loads whose token streams one Python event
loop cannot keep up with (its per-chunk cost shows in ``client_cpu_s``).

Sessions, in order of first arrival, are dealt round-robin to the processes. Each process rebuilds
the workload from the same arguments (it is deterministic), replays its share from one shared clock
origin (``time.perf_counter`` is system-wide), and streams its finished records back to the parent;
``max_requests`` is split evenly between the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from sglang_ppd.bench.runner import BenchOptions, Replay, RunResult, num_planned, sessions_of
from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.workload import load_workload
from sglang_ppd.workload.spec import Workload

START_TIMEOUT_S = 120.0
"""How long the client processes may take to import and build their workload."""
DRAIN_AFTER_INTERRUPT_S = 15.0


def shard_of(workload: Workload, index: int, count: int) -> Workload:
    return tuple(t for session in sessions_of(workload)[index::count] for t in session)


def share_of(total: int | None, index: int, count: int) -> int | None:
    return None if total is None else total // count + (1 if index < total % count else 0)


def _worker(
    index: int,
    count: int,
    source: dict[str, Any],
    opts: dict[str, Any],
    out: Any,
    ready: Any,
    go: Any,
    t0: Any,
) -> None:
    # On Ctrl-C the parent is interrupted too; it keeps what was already sent.
    with contextlib.suppress(KeyboardInterrupt):
        shard = shard_of(load_workload(**source), index, count)
        opts = opts | {"max_requests": share_of(opts["max_requests"], index, count)}
        replay = Replay(
            BenchOptions(**opts),
            on_done=lambda r: out.put(("record", tuple(getattr(r, f.name) for f in dataclasses.fields(r)))),
        )
        ready.wait()
        go.wait()
        try:
            if opts["max_requests"] != 0:
                asyncio.run(replay.run(shard, t0=t0.value))
        finally:
            r = replay.result
            out.put(("done", index, r.history_exact, r.client_cpu_s, r.model, r.wall_s))


def run_parallel(
    workers: int,
    source: dict[str, Any],
    workload: Workload,
    opts: BenchOptions,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> tuple[RunResult, bool]:
    """Replay ``workload`` (built by ``load_workload(**source)``) with ``workers`` client processes.
    Returns the merged result and whether the run was interrupted (Ctrl-C)."""
    ctx = mp.get_context("spawn")  # no fork of a process with threads (rich's refresh thread)
    out = ctx.Queue()
    ready, go = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1)
    t0 = ctx.Value("d", 0.0)
    opts_dict = dataclasses.asdict(opts)
    procs = [
        ctx.Process(target=_worker, args=(i, workers, source, opts_dict, out, ready, go, t0), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    result = RunResult(num_planned=num_planned(workload, opts.max_requests), history_exact=True)
    interrupted = False
    try:
        try:
            ready.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise RuntimeError(
                f"the {workers} client processes did not start within {START_TIMEOUT_S} s"
            ) from None
        t0.value = time.perf_counter() + 0.05
        go.wait(START_TIMEOUT_S)
        pending = set(range(workers))
        deadline: float | None = None
        while pending and (deadline is None or time.monotonic() < deadline):
            try:
                msg = out.get(timeout=0.5)
            except queue.Empty:
                pending -= {i for i, p in enumerate(procs) if p.exitcode is not None and i in pending}
                continue
            except KeyboardInterrupt:
                interrupted = True
                deadline = time.monotonic() + DRAIN_AFTER_INTERRUPT_S
                # A terminal's Ctrl-C reaches the workers too, a `kill -INT` of this process does not.
                for p in procs:
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signal.SIGINT)
                continue
            if msg[0] == "record":
                record = RequestRecord(*msg[1])
                result.records.append(record)
                if on_done is not None:
                    on_done(record)
            else:
                _, index, history_exact, cpu_s, model, wall_s = msg
                pending.discard(index)
                result.history_exact &= history_exact
                result.client_cpu_s += cpu_s
                result.model = result.model or model
                result.wall_s = max(result.wall_s, wall_s)
    except KeyboardInterrupt:
        interrupted = True  # before the replay started: nothing to keep
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    result.records.sort(key=lambda r: r.arrival_s)
    return result, interrupted
