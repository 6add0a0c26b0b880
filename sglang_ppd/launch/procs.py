"""Child processes of a launch: each in its own process group (SGLang servers fork schedulers and
detokenizers), logged to a file, and stopped group-wide so nothing is orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from sglang_ppd.launch.plan import Child

STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: a launcher killed with SIGKILL (no cleanup possible) still
    takes its children down, since the kernel sends them SIGTERM when it dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildFailed(RuntimeError):
    """A child exited or never became healthy; the message carries its log tail."""


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, child: Child, extra_argv: tuple[str, ...] = ()) -> None:
        with open(self.log_path(child.name), "ab") as log:
            self.procs[child.name] = subprocess.Popen(
                [*child.argv, *extra_argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **child.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, name: str, num_lines: int = 30) -> str:
        try:
            lines = self.log_path(name).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-num_lines:])

    def failure(self, name: str, what: str) -> ChildFailed:
        return ChildFailed(f"{name} {what}; last lines of {self.log_path(name)}:\n{self.log_tail(name)}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise self.failure(name, f"exited with code {proc.returncode}")

    def stop_all(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every group (router first, so it stops sending work), then SIGKILL stragglers."""
        for proc in reversed(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in self.procs.values():
            # The group may outlive its leader (a forked scheduler): kill the group regardless.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def busy_ports(host: str, ports: tuple[int, ...]) -> list[int]:
    """The ports another process already listens on: starting there would fail, or worse, have
    launch talk to someone else's server."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is fine
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def wait_healthy(
    sup: Supervisor,
    children: tuple[Child, ...],
    timeout_s: float,
    stop: asyncio.Event,
    progress: Callable[[str], None],
) -> None:
    """Poll every child's health URL until all answer 200; fail fast when one exits."""
    pending = {c.name: c.health_url for c in children}
    start = time.monotonic()
    last_note = 0.0
    async with aiohttp.ClientSession() as session:
        while pending:
            sup.check_alive()
            if stop.is_set():
                raise asyncio.CancelledError
            ok = await asyncio.gather(*(_healthy(session, url) for url in pending.values()))
            for name, good in zip(list(pending), ok, strict=True):
                if good:
                    del pending[name]
                    progress(f"  {name} is up ({time.monotonic() - start:.1f}s)")
            elapsed = time.monotonic() - start
            if pending and elapsed > timeout_s:
                name = next(iter(pending))
                raise sup.failure(name, f"not healthy after {timeout_s:.0f}s")
            if pending and elapsed - last_note >= 10:
                last_note = elapsed
                progress(f"  waiting for {', '.join(pending)} ({elapsed:.0f}s)")
            if pending:
                await asyncio.sleep(0.2)
