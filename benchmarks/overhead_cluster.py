"""The cluster ``router_overhead.py`` measures: emulated 2P2D workers at time scale 0 and the routers
under test (ours with a policy, the Rust ``sglang_router``), each a process of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sglang_ppd.bench.ports import free_port


@dataclass
class Target:
    name: str
    url: str | None  # None: the direct baseline
    proc: subprocess.Popen[bytes] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    routes: Counter[str] = field(default_factory=Counter)
    saturation: list[dict[str, Any]] = field(default_factory=list)


class Cluster:
    """The emulated workers and the routers in front of them, as child processes."""

    def __init__(self, pin: bool, log_dir: Path, page_size: int = 16) -> None:
        ncpu = len(os.sched_getaffinity(0))
        self.pin = pin and ncpu >= 2
        cpus = sorted(os.sched_getaffinity(0))
        self.router_cpus = str(cpus[-1])
        self.other_cpus = ",".join(map(str, cpus[:-1]))
        self.log_dir = log_dir
        self.page_size = page_size
        self.procs: list[subprocess.Popen[bytes]] = []
        self.prefill: list[tuple[str, int]] = []
        self.decode: list[str] = []

    def spawn(self, name: str, argv: list[str], router: bool) -> subprocess.Popen[bytes]:
        if self.pin:
            argv = ["taskset", "-c", self.router_cpus if router else self.other_cpus, *argv]
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_workers(self, num_prefill: int, num_decode: int) -> None:
        py = sys.executable
        for i in range(num_prefill):
            port, boot = free_port(), free_port()
            self.spawn(
                f"prefill{i}",
                [
                    py,
                    "-m",
                    "sglang_ppd.cli",
                    "emulate",
                    "--role",
                    "prefill",
                    "--port",
                    str(port),
                    "--bootstrap-port",
                    str(boot),
                    "--time-scale",
                    "0",
                    "--page-size",
                    str(self.page_size),
                ],
                False,
            )
            self.prefill.append((f"http://127.0.0.1:{port}", boot))
        for i in range(num_decode):
            port = free_port()
            self.spawn(
                f"decode{i}",
                [
                    py,
                    "-m",
                    "sglang_ppd.cli",
                    "emulate",
                    "--role",
                    "decode",
                    "--port",
                    str(port),
                    "--ppd",
                    "--time-scale",
                    "0",
                    "--page-size",
                    str(self.page_size),
                ],
                False,
            )
            self.decode.append(f"http://127.0.0.1:{port}")

    def worker_args(self) -> list[str]:
        args: list[str] = []
        for url, boot in self.prefill:
            args += ["--prefill", url, str(boot)]
        for url in self.decode:
            args += ["--decode", url]
        return args

    def start_ours(self, policy: str, processes: int = 1) -> Target:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "sglang_ppd.cli",
            "router",
            *self.worker_args(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--policy",
            policy,
            "--processes",
            str(processes),
            "--log-level",
            "warning",
        ]
        name = f"sglang_ppd {policy}" + (f" x{processes} processes" if processes > 1 else "")
        return Target(name, f"http://127.0.0.1:{port}", self.spawn(f"ours-{policy}-{processes}", argv, True))

    def start_rust(self, python: str) -> Target:
        port = free_port()
        argv = [
            python,
            "-m",
            "sglang_router.launch_router",
            "--pd-disaggregation",
            *self.worker_args(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--prometheus-port",
            str(free_port()),
            "--log-level",
            "warn",
        ]
        return Target("sglang_router (Rust)", f"http://127.0.0.1:{port}", self.spawn("rust", argv, True))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_ready(
    http: aiohttp.ClientSession,
    url: str,
    proc: subprocess.Popen[bytes] | None,
    body: dict[str, Any] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Healthy, and (for a router) one request served: a router may answer /health before its workers."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}")
        try:
            if body is None:
                async with http.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            else:
                async with http.post(f"{url}/generate", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s} s ({last})")
