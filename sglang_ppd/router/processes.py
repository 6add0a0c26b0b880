"""``sglang-ppd router --processes N``: N full router processes on one port (SO_REUSEPORT).

The supervisor (this process) serves nothing: it starts N children, each a complete router that
binds the same port with SO_REUSEPORT (the kernel spreads new connections over them), subscribes
to every worker's KV events and telemetry, and keeps its own in-flight books. A child that dies is
started again after ``RESTART_DELAY_S``; it rebuilds each worker's prefix index from the worker's
KV-event replay buffer when its first event arrives (``router.subscribers``). If children keep
dying within ``MIN_UPTIME_S`` of their start (``MAX_FAILED_STARTS`` in a row: the port taken by
another program, say), the group stops with exit status 1. SIGINT/SIGTERM stop every child.
``/metrics`` and ``/stats`` sum over the children (``router.peers``).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.peers import Group

log = logging.getLogger(__name__)
RESTART_DELAY_S = 0.5
MIN_UPTIME_S = 5.0
MAX_FAILED_STARTS = 5
STOP_TIMEOUT_S = 10.0


def _child(cfg: RouterConfig, group: Group, log_level: str) -> None:
    from sglang_ppd.router.cli import run_process

    run_process(cfg, log_level, group)


def _reserve_port(host: str) -> socket.socket:
    """Port 0: pick the port once for every child (held, not listening, so it takes no connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, 0))
    return s


def run_group(cfg: RouterConfig, num_processes: int, log_level: str) -> int:
    held = None if cfg.port else _reserve_port(cfg.host)
    if held is not None:
        cfg = cfg.model_copy(update={"port": held.getsockname()[1]})
    run_dir = Path(tempfile.mkdtemp(prefix="sglang-ppd-router-"))
    ctx = multiprocessing.get_context("spawn")  # no inherited event loop, ZMQ context or sockets
    stopping = False
    started_s: dict[int, float] = {}
    num_failed_starts, status = 0, 0

    def start(index: int) -> Any:
        started_s[index] = time.monotonic()
        p = ctx.Process(
            target=_child, args=(cfg, Group(run_dir, index, num_processes), log_level), name=f"router-{index}"
        )
        p.start()
        return p

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    children = {i: start(i) for i in range(num_processes)}
    print(
        f"sglang_ppd router listening on http://{cfg.host}:{cfg.port} (policy {cfg.policy}, "
        f"{num_processes} processes: {' '.join(str(p.pid) for p in children.values())})",
        flush=True,
    )
    try:
        while not stopping:
            sentinels = {p.sentinel: i for i, p in children.items()}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=RESTART_DELAY_S)
            if stopping:
                break
            for sentinel in ready:
                i = sentinels[sentinel]  # type: ignore[index]
                old = children[i]
                old.join()
                quick = time.monotonic() - started_s[i] < MIN_UPTIME_S
                num_failed_starts = num_failed_starts + 1 if quick else 0
                if num_failed_starts >= MAX_FAILED_STARTS:
                    log.error("router processes keep exiting at start (last: %s); stopping", old.exitcode)
                    stopping, status = True, 1
                    break
                log.warning("router process %d (pid %s) exited with %s; starting it again", i, old.pid,
                            old.exitcode)  # fmt: skip
                children[i] = start(i)
                log.warning("router process %d is pid %s", i, children[i].pid)
    finally:
        for p in children.values():
            if p.is_alive():
                p.terminate()
        for p in children.values():
            p.join(STOP_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
        shutil.rmtree(run_dir, ignore_errors=True)
        if held is not None:
            held.close()
    return status
