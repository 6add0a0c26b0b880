"""Normal requests while thousands of slow clients hold connections to the router.

    python benchmarks/slow_clients.py [--slow 2000] [--hold-s 20] [--source DIR]
        # -> benchmarks/results/slow_clients.json

Emulated 1P1D workers at time scale 0 and the router (default config, ``ppd_deflect``), each a
process of its own (the router pinned to the last CPU when there are two or more). Phase 1: a
closed loop of ``--concurrency`` normal streaming requests for ``--base-s`` seconds (the baseline).
Phase 2: ``--slow`` connections are opened and held, half stalled in their request headers and half
sending a ``/generate`` body one byte every ``--trickle-s``; a connection the router closes is opened
again at once, so ``--slow`` are held throughout. The same closed loop then runs for ``--hold-s``.
Reported per phase: requests, non-200 answers, latency P50/P99 (ms, request sent to last byte); and
how many slow connections the router cut (408 or closed).

``--max-inflight N`` lowers the router's in-flight cap (below the number of trickling bodies, a
router that gives slots before bodies are read starves normal requests). ``--source DIR`` runs the
router from another checkout (``mkdir /tmp/old && git archive <commit> | tar -x -C /tmp/old``) to
compare before and after a change on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from overhead_cluster import Cluster, wait_ready

from sglang_ppd.bench.ports import free_port
from sglang_ppd.metrics.result import machine_info, write_result_json

OUT = Path(__file__).parent / "results" / "slow_clients.json"
BODY = {"input_ids": list(range(100, 356)), "sampling_params": {"max_new_tokens": 8}, "stream": True}


async def _normal_loop(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    latencies_ms: list[float] = []
    statuses: dict[str, int] = {}
    end = time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=30)

    async def user(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                async with http.post(f"{url}/generate", json=BODY) as r:
                    await r.read()
                    key = str(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            statuses[key] = statuses.get(key, 0) + 1

    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(user(http) for _ in range(concurrency)))
    lat = np.array(latencies_ms)
    return {
        "requests": len(latencies_ms),
        "statuses": statuses,
        "non_200": sum(n for k, n in statuses.items() if k != "200"),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
    }


class SlowClients:
    """``num`` connections held open: half stall in their headers, half trickle a body."""

    def __init__(self, host: str, port: int, num: int, trickle_s: float) -> None:
        self.host, self.port, self.num, self.trickle_s = host, port, num, trickle_s
        self.num_open = 0
        self.num_cut = 0
        self.num_connect_errors = 0
        self._stop = asyncio.Event()

    async def _one(self, i: int) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.num_connect_errors += 1
                await asyncio.sleep(0.5)
                continue
            self.num_open += 1
            try:
                if i % 2:
                    writer.write(b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-")
                else:
                    writer.write(b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-Length: 100000\r\n\r\n{")
                await writer.drain()
                while not self._stop.is_set():
                    try:
                        await asyncio.wait_for(reader.read(1024), self.trickle_s)
                        break  # an answer (408) or EOF: the router let go of this connection
                    except asyncio.TimeoutError:
                        if i % 2 == 0:
                            writer.write(b" ")
                            await writer.drain()
                self.num_cut += not self._stop.is_set()
            except (ConnectionError, OSError):
                self.num_cut += 1
            finally:
                self.num_open -= 1
                writer.close()

    async def run(self) -> None:
        await asyncio.gather(*(self._one(i) for i in range(self.num)))

    def stop(self) -> None:
        self._stop.set()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.source:
        src = Path(args.source).resolve()
        os.environ["PYTHONPATH"] = f"{src}{os.pathsep}{src / 'policies'}"
    cluster = Cluster(pin=True, log_dir=log_dir)
    try:
        cluster.start_workers(1, 1)
        router_port = free_port()
        argv = [sys.executable, "-m", "sglang_ppd.cli", "router", *cluster.worker_args()]
        argv += ["--host", "127.0.0.1", "--port", str(router_port), "--log-level", "warning"]
        if args.max_inflight is not None:
            cfg = log_dir / "router.yaml"
            cfg.write_text(f"max_inflight: {args.max_inflight}\n")
            argv += ["--config", str(cfg)]
        proc = cluster.spawn("router", argv, True)
        url = f"http://127.0.0.1:{router_port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, url, proc, BODY)
        base = await _normal_loop(url, args.concurrency, args.base_s)
        slow = SlowClients("127.0.0.1", router_port, args.slow, args.trickle_s)
        holder = asyncio.create_task(slow.run())
        t0 = time.monotonic()
        while slow.num_open < args.slow and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.2)
        opened_s = time.monotonic() - t0
        held_at_start = slow.num_open
        cut_before = slow.num_cut
        hold = await _normal_loop(url, args.concurrency, args.hold_s)
        held_at_end = slow.num_open
        slow.stop()
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        return {
            "benchmark": "slow_clients",
            "seed": 0,
            "machine": machine_info(),
            "setup": {
                "cluster": "emulated 1P1D, time_scale 0, router process with its default config",
                "max_inflight": args.max_inflight,
                "source": args.source or "this checkout",
                "slow_connections": args.slow,
                "trickle_s": args.trickle_s,
                "concurrency": args.concurrency,
                "base_s": args.base_s,
                "hold_s": args.hold_s,
                "prompt_len": len(BODY["input_ids"]),  # type: ignore[arg-type]
                "pinned": cluster.pin,
            },
            "baseline": base,
            "with_slow_clients": hold,
            "slow": {
                "seconds_to_open": opened_s,
                "held_at_start": held_at_start,
                "held_at_end": held_at_end,
                "cut_by_router_during_hold": slow.num_cut - cut_before,
                "connect_errors": slow.num_connect_errors,
            },
            "p99_ratio": (hold["p99_ms"] / base["p99_ms"]) if base["p99_ms"] and hold["p99_ms"] else None,
        }
    finally:
        cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slow", type=int, default=2000)
    p.add_argument("--trickle-s", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--base-s", type=float, default=10.0)
    p.add_argument("--hold-s", type=float, default=20.0)
    p.add_argument("--max-inflight", type=int, help="the router's max_inflight (default: its own)")
    p.add_argument("--source", help="run the router from this checkout instead")
    p.add_argument("--log-dir", default="/tmp/slow_clients_logs")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    path = write_result_json(args.out, result)
    base, hold = result["baseline"], result["with_slow_clients"]
    print(
        f"baseline: {base['requests']} requests, p99 {base['p99_ms']:.1f} ms, non-200 {base['non_200']}; "
        f"with {result['slow']['held_at_start']} slow connections: {hold['requests']} requests, "
        f"p99 {hold['p99_ms']:.1f} ms, non-200 {hold['non_200']} -> {path}"
    )


if __name__ == "__main__":
    main()
