"""Shared test fixtures: emulated SGLang workers as subprocesses, a fake 1P1D cluster behind an
in-process router, raw loopback sockets (for what a well-behaved HTTP client never sends: stalled
headers, slow bodies, invalid bytes), the released SGLang wheels' sources, and contract-bound SGLang
stand-ins for the worker adapter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from test_router_support import FakeWorker, start_router

from sglang_ppd.bench.ports import free_port
from sglang_ppd.core.policy import Policy
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.worker.contract import CONTRACTS, Attr, Func, Method

EMULATOR_START_S = 30.0


@dataclass
class EmulatedWorker:
    """One ``sglang-ppd emulate`` subprocess on loopback, in its own process group."""

    role: str
    url: str
    port: int
    bootstrap_port: int | None
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def _wait_healthy(w: EmulatedWorker, log: Any) -> None:
    deadline = time.monotonic() + EMULATOR_START_S
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{w.url} exited with {w.proc.returncode}:\n{log.read().decode()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{w.url}/health", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{w.url} not healthy after {EMULATOR_START_S}s")


@pytest.fixture(scope="module")
def emulated_worker() -> Iterator[Callable[..., EmulatedWorker]]:
    """``emulated_worker(role, *flags, time_scale=0.2)``: start an emulated worker (``sglang-ppd
    emulate --role ROLE`` on free loopback ports, plus ``flags``) and return it once healthy. Every
    worker started is stopped when the module's tests are done; ``stop()``/``kill()`` end one sooner."""
    started: list[EmulatedWorker] = []
    files: list[Any] = []
    with tempfile.TemporaryDirectory() as logs:

        def start(role: str, *flags: str, time_scale: float = 0.2) -> EmulatedWorker:
            port = free_port()
            bootstrap = free_port() if role == "prefill" else None
            cmd = [sys.executable, "-m", "sglang_ppd.cli", "emulate", "--role", role, "--port", str(port),
                   "--time-scale", str(time_scale), *flags]  # fmt: skip
            if bootstrap is not None:
                cmd += ["--bootstrap-port", str(bootstrap)]
            # A file, not a pipe nobody reads: a chatty worker would block on a full pipe.
            log = open(Path(logs) / f"{role}-{port}.log", "w+b")  # noqa: SIM115 (closed at teardown)
            files.append(log)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            w = EmulatedWorker(role, f"http://127.0.0.1:{port}", port, bootstrap, proc)
            started.append(w)
            _wait_healthy(w, log)
            return w

        yield start
        for w in started:
            w.stop()
        for f in files:
            f.close()


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


PairConfig = Callable[..., RouterConfig]


@pytest.fixture
def pair_config() -> PairConfig:
    """``pair_config((purl, bport, durl), **cfg)``: the router config (port 0) of one prefill worker,
    with its bootstrap port, and one decode worker, plus ``cfg``'s keys."""

    def make(pair: tuple[str, int, str], **cfg: Any) -> RouterConfig:
        purl, bport, durl = pair
        workers = [{"url": purl, "role": "prefill", "bootstrap_port": bport}, {"url": durl, "role": "decode"}]
        return RouterConfig.model_validate({"port": 0, "workers": workers, **cfg})

    return make


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


StalledReader = Callable[[str, dict[str, Any]], Awaitable[tuple[bytes, asyncio.StreamReader]]]


@pytest.fixture
async def stalled_reader() -> AsyncIterator[StalledReader]:
    """``await stalled_reader(base_url, body)``: POST ``body`` to ``/generate`` from a loopback client
    whose receive buffer is 4 KiB, read only the reply's status line and then take nothing more (a
    client that stops reading). Returns the status line and the stream; all closed at teardown."""
    writers: list[asyncio.StreamWriter] = []

    async def send(url: str, body: dict[str, Any]) -> tuple[bytes, asyncio.StreamReader]:
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # set before connecting: the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writers.append(writer)
        raw = orjson.dumps(body)
        writer.write(b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10), reader

    yield send
    for w in writers:
        w.close()


# The releases CI checks: the supported ones, and 0.5.20 (the one the worker must refuse by name).
SGLANG_WHEEL_VERSIONS = (*CONTRACTS, "0.5.20")


def _extract(wheel: Path, dest: Path) -> None:
    """The wheel's Python sources and metadata (what the contract check and importlib.metadata read)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".py") or name.endswith(".dist-info/METADATA"):
                zf.extract(name, dest)
    (dest / ".complete").touch()


@pytest.fixture(scope="session")
def sglang_sources(pytestconfig: pytest.Config) -> dict[str, Path]:
    """version -> a directory holding that SGLang release's ``sglang/`` sources and dist-info, from the
    real wheel (``pip download --no-deps``), cached on disk across runs. A failed download fails the
    tests that need it: the contract must never go unchecked silently."""
    cache = Path(pytestconfig.cache.mkdir("sglang-wheels"))  # type: ignore[union-attr]
    out: dict[str, Path] = {}
    for version in SGLANG_WHEEL_VERSIONS:
        dest = cache / f"sglang-{version}"
        if not (dest / ".complete").exists():
            wheels = list(cache.glob(f"sglang-{version}-*.whl"))
            if not wheels:
                cmd = [sys.executable, "-m", "pip", "download", "-q", f"sglang=={version}", "--no-deps",
                       "--only-binary=:all:", "--python-version", "3.11",
                       "--platform", "manylinux_2_34_x86_64", "-d", str(cache)]  # fmt: skip
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                wheels = list(cache.glob(f"sglang-{version}-*.whl"))
                if r.returncode != 0 or not wheels:
                    pytest.fail(f"could not download the sglang {version} wheel:\n{r.stdout}\n{r.stderr}")
            _extract(wheels[0], dest)
        out[version] = dest
    return out


_INTERNAL = frozenset({"_allowed", "_what", "_check"})


class ContractBound:
    """A stand-in for an SGLang object that answers only the names ``cls`` has in a release's contract.

    The adapter's CPU seam tests drive the real hooks through these, so a hook that touches a name
    the contract (checked against the release's wheel) does not declare fails here instead of on a GPU.
    """

    def __init__(self, allowed: frozenset[str], what: str, **attrs: Any) -> None:
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_what", what)
        for k, v in attrs.items():
            setattr(self, k, v)

    def _check(self, name: str) -> None:
        if name not in self._allowed:
            raise AssertionError(f"the adapter touched {self._what}.{name}, which no contract entry declares")

    def __getattribute__(self, name: str) -> Any:
        if name not in _INTERNAL and not name.startswith("__"):
            object.__getattribute__(self, "_check")(name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check(name)
        object.__setattr__(self, name, value)


# Our own per-object state that the adapter keeps on SGLang objects.
_OURS = {"Scheduler": {"_ppd_state"}}


@pytest.fixture(params=tuple(CONTRACTS))
def sglang_release(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ContractBound]]:
    """Selects one supported release's adapter implementation and returns ``make(cls, **attrs)``,
    which builds a :class:`ContractBound` stand-in for SGLang class ``cls`` of that release. Modules
    the adapter imports come from ``make.modules`` (name -> ``make(module_name, **functions)``)."""
    from sglang_ppd.worker import releases, sglang_ext

    version: str = request.param
    previous = sglang_ext.impl().version
    sglang_ext.select(version)
    names: dict[str, set[str]] = {}
    for e in CONTRACTS[version].entries:
        if isinstance(e, Method | Attr):
            names.setdefault(e.cls, set()).add(e.name)
        elif isinstance(e, Func):
            names.setdefault(e.module, set()).add(e.name)

    def make(cls: str, **attrs: Any) -> ContractBound:
        return ContractBound(frozenset(names.get(cls, set()) | _OURS.get(cls, set())), cls, **attrs)

    modules: dict[str, ContractBound] = {}

    def sglang_module(name: str) -> ContractBound:
        if name not in modules:
            raise AssertionError(f"the adapter imported {name}, which the test did not provide")
        return modules[name]

    monkeypatch.setattr(releases, "sglang_module", sglang_module)
    make.version = version  # type: ignore[attr-defined]
    make.modules = modules  # type: ignore[attr-defined]
    yield make
    sglang_ext.select(previous)
