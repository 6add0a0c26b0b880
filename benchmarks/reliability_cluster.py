"""Shared by the reliability benchmarks: an emulated cluster (``sglang-ppd emulate`` subprocesses on
loopback), the sglang_ppd router in this process over it, a telemetry blackout switch, and the
bench replayer. Not a benchmark itself."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sglang_ppd.bench.ports import free_port
from sglang_ppd.bench.runner import BenchOptions, Replay, RunResult
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import load_policy
from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer
from sglang_ppd.workload.spec import Workload

PROFILE = "h100-llama31-8b"


@dataclass
class Worker:
    role: str
    proc: asyncio.subprocess.Process
    url: str
    bootstrap_port: int | None


async def spawn_worker(role: str, time_scale: float, *extra: str) -> Worker:
    port = free_port()
    args = [
        "--role",
        role,
        "--port",
        str(port),
        "--time-scale",
        str(time_scale),
        "--profile",
        PROFILE,
        *extra,
    ]
    bport = None
    if role == "prefill":
        bport = free_port()
        args += ["--bootstrap-port", str(bport)]
    else:
        args += ["--ppd"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sglang_ppd.cli", "emulate", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    w = Worker(role, proc, f"http://127.0.0.1:{port}", bport)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"emulated {role} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with s.get(f"{w.url}/health") as r:
                    if r.status == 200:
                        return w
            await asyncio.sleep(0.1)
    raise RuntimeError(f"emulated {role} on {w.url} never became healthy")


async def stop_worker(w: Worker) -> None:
    if w.proc.returncode is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(w.proc.wait(), 10)
        except asyncio.TimeoutError:
            w.proc.kill()
            await w.proc.wait()


def worker_spec(w: Worker) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": w.url, "role": w.role}
    if w.bootstrap_port is not None:
        spec["bootstrap_port"] = w.bootstrap_port
    return spec


@contextlib.asynccontextmanager
async def cluster(
    num_prefill: int, num_decode: int, policy: str, time_scale: float = 1.0, **router_cfg: Any
) -> AsyncIterator[tuple[list[Worker], Router, str]]:
    roles = ["prefill"] * num_prefill + ["decode"] * num_decode
    workers = list(await asyncio.gather(*(spawn_worker(r, time_scale) for r in roles)))
    runner: web.AppRunner | None = None
    try:
        specs = [
            {
                "url": w.url,
                "role": w.role,
                **({"bootstrap_port": w.bootstrap_port} if w.bootstrap_port else {}),
            }
            for w in workers
        ]
        cfg = RouterConfig.model_validate({"port": 0, "workers": specs, "profile": PROFILE, **router_cfg})
        profile = load_profile(cfg.profile)
        router = Router(cfg, load_policy(policy, {}, profile), profile, ByteTokenizer(), policy)
        runner, port = await start_server(router, "127.0.0.1", 0)
        yield workers, router, f"http://127.0.0.1:{port}"
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.gather(*(stop_worker(w) for w in workers))


def blackout(router: Router) -> None:
    """All telemetry stops reaching the router: every subscriber and poller is cancelled."""
    for w in router.registry.all():
        w.cancel_tasks()


async def restore(router: Router) -> None:
    """Telemetry returns: re-read ``/server_info`` and resubscribe (KV events resync or replay)."""
    for w in router.registry.all():
        await router._discover(w)


async def replay(url: str, workload: Workload, seed: int, duration_s: float | None = None) -> RunResult:
    return await Replay(BenchOptions(url=url, seed=seed, duration_s=duration_s)).run(workload)
