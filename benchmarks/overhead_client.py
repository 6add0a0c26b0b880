"""The load generator of ``router_overhead.py``: sequential latency, open-loop steps and closed-loop
saturation against a target, with the router's CPU time per step."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import numpy as np
from overhead_cluster import Cluster, Target
from procstat import tree_cpu_s

ROUTE_HEADER = "x-ppd-route"
"""The route our router took (sglang_ppd.router); absent from the Rust router's replies."""
DRAIN_S = 5.0


class Client:
    def __init__(
        self, http: aiohttp.ClientSession, cluster: Cluster, prompt_len: int, output_len: int
    ) -> None:
        self.http, self.cluster = http, cluster
        self.prompt_len, self.output_len = prompt_len, output_len
        self.rng = random.Random(0)
        self.next_pair = 0

    def body(self) -> dict[str, Any]:
        return {
            "input_ids": [self.rng.randrange(32000) for _ in range(self.prompt_len)],
            "sampling_params": {"max_new_tokens": self.output_len, "ignore_eos": True},
        }

    async def _post(self, url: str, body: dict[str, Any]) -> str:
        """POST and read the reply; returns the route our router took (its route header), if any."""
        async with self.http.post(f"{url}/generate", json=body) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {data[:120]!r}")
            return r.headers.get(ROUTE_HEADER, "unknown")

    async def once(self, target: Target, body: dict[str, Any]) -> float:
        """One request; its latency in ms. Raises on failure."""
        t0 = time.perf_counter()
        if target.url is not None:
            target.routes[await self._post(target.url, body)] += 1
        else:
            k = self.next_pair
            self.next_pair += 1
            p_url, boot = self.cluster.prefill[k % len(self.cluster.prefill)]
            d_url = self.cluster.decode[k % len(self.cluster.decode)]
            pd = {
                **body,
                "bootstrap_host": "127.0.0.1",
                "bootstrap_port": boot,
                "bootstrap_room": self.rng.getrandbits(63),
            }
            await asyncio.gather(self._post(p_url, pd), self._post(d_url, pd))
        return 1000 * (time.perf_counter() - t0)

    async def saturate(self, target: Target, concurrency: int, duration_s: float) -> dict[str, Any]:
        """Closed loop: ``concurrency`` clients send back to back for ``duration_s``."""
        # Fresh prompts: a repeated one would hit a decode worker's cache and change the route.
        bodies = [self.body() for _ in range(int(duration_s * 800))]
        ok = errors = 0
        pid = target.proc.pid if target.proc is not None else None
        c0 = tree_cpu_s(pid) if pid is not None else None
        t0 = time.perf_counter()
        end = t0 + duration_s

        async def loop(k: int) -> None:
            nonlocal ok, errors
            n = k
            while time.perf_counter() < end:
                try:
                    await self.once(target, bodies[n % len(bodies)])
                    ok += 1
                except Exception:  # noqa: BLE001 (every failure is counted, whatever it is)
                    errors += 1
                n += concurrency

        await asyncio.gather(*(loop(k) for k in range(concurrency)))
        wall_s = time.perf_counter() - t0
        c1 = tree_cpu_s(pid) if pid is not None else None
        return {
            "rps": ok / wall_s,
            "ok": ok,
            "errors": errors,
            "router_cpu_ms_per_req": None if c0 is None or c1 is None or not ok else 1000 * (c1 - c0) / ok,
        }

    async def step(self, target: Target, rate: float, duration_s: float, seed: int) -> dict[str, Any]:
        """Open-loop Poisson arrivals at ``rate`` for ``duration_s``."""
        rng = random.Random(seed)
        bodies = [self.body() for _ in range(int(rate * duration_s * 1.5) + 10)]
        lat: list[float] = []
        errors: list[str] = []
        tasks: list[asyncio.Task[None]] = []

        async def one(body: dict[str, Any]) -> None:
            try:
                lat.append(await self.once(target, body))
            except Exception as exc:  # noqa: BLE001 (every failure is counted, whatever it is)
                errors.append(repr(exc)[:120])

        pid = target.proc.pid if target.proc is not None else None
        c0 = tree_cpu_s(pid) if pid is not None else None
        t0 = time.perf_counter()
        at = 0.0
        while True:
            at += rng.expovariate(rate)
            if at >= duration_s:
                break
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[len(tasks) % len(bodies)])))
        sent_s = time.perf_counter() - t0
        done, pending = await asyncio.wait(tasks, timeout=DRAIN_S) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall_s = time.perf_counter() - t0
        c1 = tree_cpu_s(pid) if pid is not None else None
        arr = np.array(lat) if lat else np.array([np.nan])
        return {
            "offered_rps": rate,
            "sent": len(tasks),
            "ok": len(lat),
            "errors": len(errors),
            "unfinished": len(pending),
            "send_s": sent_s,
            "wall_s": wall_s,
            "achieved_rps": len(lat) / max(sent_s, 1e-9),
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "router_cpu_s": None if c0 is None or c1 is None else c1 - c0,
            "router_cpu_ms_per_req": None
            if c0 is None or c1 is None or not lat
            else 1000 * (c1 - c0) / len(lat),
            "first_errors": sorted(set(errors))[:3],
        }
