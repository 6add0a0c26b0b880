"""Helpers for tests that run emulated workers as real subprocesses on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from sglang_ppd.bench.ports import free_port

START_TIMEOUT_S = 20.0


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{out}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s")


@dataclass
class Worker:
    url: str
    port: int
    bootstrap_port: int | None
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def emulated(role: str, *extra: str, time_scale: float = 0.2) -> Iterator[Worker]:
    port = free_port()
    bootstrap = free_port() if role == "prefill" else None
    cmd = [sys.executable, "-m", "sglang_ppd.emulator.cli", "--role", role, "--port", str(port),
           "--time-scale", str(time_scale), *extra]
    if bootstrap is not None:
        cmd += ["--bootstrap-port", str(bootstrap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield Worker(url, port, bootstrap, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
