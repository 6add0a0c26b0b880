"""The processes of one ``sglang-ppd router --processes N`` group, as seen from one of them.

Every process is a full router (its own workers' KV-event and telemetry subscriptions, its own
in-flight books) behind one SO_REUSEPORT port, so the kernel decides which process answers a
scrape. Each process serves its own state on a Unix socket in the group's run directory; its
``/metrics`` and ``/stats`` fetch every peer's state at scrape time and report the sum, so any
process gives the same view and a counter never goes back between two scrapes answered by
different processes. A peer that does not answer within ``PEER_TIMEOUT_S`` (dead, restarting) is
left out and counted in ``sglang_ppd_router_processes{state="unreachable"}``; a restarted process
starts its counters from zero, as any restarted Prometheus target does.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sglang_ppd.router.metrics import RouterMetrics
from sglang_ppd.router.metrics_state import merge_metrics, metrics_state
from sglang_ppd.router.service import Router
from sglang_ppd.router.stats import build_stats, worker_rows

PEER_TIMEOUT_S = 1.0
MAX_STATE_BYTES = 16 << 20
"""A state is a few hundred KB at most (the pooled latency windows): more is not a peer's."""


@dataclass(frozen=True, slots=True)
class Group:
    run_dir: Path
    index: int
    num_processes: int

    def socket_path(self, index: int) -> Path:
        return self.run_dir / f"router-{index}.sock"


def local_state(router: Router, group: Group) -> dict[str, Any]:
    rows = worker_rows(router)
    return {
        "index": group.index,
        "pid": os.getpid(),
        "uptime_s": time.monotonic() - router.started_s,
        "inflight": router.num_inflight,
        "queued": router.num_queued,
        "local_inflight": {w.name: w.num_local_inflight for w in router.registry.all()},
        "workers": {url: {"age_ms": age, "inflight": n, "blocks": blocks} for url, _, age, n, blocks in rows},
        "table_blocks": router.prefix.num_table_blocks(),
        "metrics": metrics_state(router.metrics),
    }


class Peers:
    """This process's end of the group: serves its state, gathers everyone's."""

    def __init__(self, router: Router, group: Group) -> None:
        self.router, self.group = router, group
        self._runner: web.AppRunner | None = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/state", self._serve_state)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        path = self.group.socket_path(self.group.index)
        path.unlink(missing_ok=True)  # a socket left by this index's previous (killed) process
        await web.UnixSite(self._runner, str(path)).start()

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve_state(self, _: web.Request) -> web.Response:
        return web.json_response(local_state(self.router, self.group))

    async def _fetch(self, index: int) -> dict[str, Any] | None:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.group.socket_path(index)))
            session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            )
            self._sessions[index] = session
        try:
            async with session.get("http://peer/state") as resp:
                if resp.status != 200 or (resp.content_length or 0) > MAX_STATE_BYTES:
                    return None
                state = await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    async def gather(self) -> tuple[list[dict[str, Any]], RouterMetrics, int]:
        """Every reachable process's state (this one's first), their summed metrics, and how many
        processes did not answer or answered something malformed."""
        own = local_state(self.router, self.group)
        others = [i for i in range(self.group.num_processes) if i != self.group.index]
        fetched = await asyncio.gather(*(self._fetch(i) for i in others))
        states = [own]
        for state in fetched:
            try:
                if state is None:
                    raise ValueError("no answer")
                merge_metrics([state["metrics"]])  # raises on a malformed one
                _check_books(state)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            states.append(state)
        metrics = merge_metrics([s["metrics"] for s in states])
        num_unreachable = len(others) + 1 - len(states)
        return states, metrics, num_unreachable

    async def metrics_text(self) -> str:
        states, merged, num_unreachable = await self.gather()
        rows = []
        for url, role, _, _, _ in worker_rows(self.router):
            views = [s["workers"][url] for s in states if url in s["workers"]]
            ages = [v["age_ms"] for v in views if v["age_ms"] is not None]
            rows.append((url, role, max(ages) if ages else None, sum(v["inflight"] for v in views),
                         min(v["blocks"] for v in views)))  # fmt: skip
        text = merged.render(rows)
        return text + (
            "# HELP sglang_ppd_router_processes Router processes of this group, by state.\n"
            "# TYPE sglang_ppd_router_processes gauge\n"
            f'sglang_ppd_router_processes{{state="up"}} {len(states)}\n'
            f'sglang_ppd_router_processes{{state="unreachable"}} {num_unreachable}\n'
        )

    async def stats(self) -> dict[str, Any]:
        states, merged, num_unreachable = await self.gather()
        out = build_stats(self.router, merged)
        out["requests"]["inflight"] = sum(s["inflight"] for s in states)
        out["requests"]["queued"] = sum(s["queued"] for s in states)
        for w in out["workers"]:
            views = [s for s in states if w["url"] in s["workers"]]
            w["num_inflight"] = sum(s["workers"][w["url"]]["inflight"] for s in views)
            w["num_local_inflight"] = sum(s["local_inflight"].get(w["url"], 0) for s in views)
        out["processes"] = [
            {
                "index": s["index"],
                "pid": s["pid"],
                "uptime_s": s["uptime_s"],
                "requests_total": sum(n for *_, n in s["metrics"]["requests"]),
                "inflight": s["inflight"],
                "indexed_blocks": {url: v["blocks"] for url, v in s["workers"].items()},
                "table_blocks": s["table_blocks"],
            }
            for s in sorted(states, key=lambda s: s["index"])
        ]
        out["num_processes_unreachable"] = num_unreachable
        return out


PEERS: web.AppKey[Peers] = web.AppKey("peers", Peers)


def _check_books(state: dict[str, Any]) -> None:
    """The per-worker and per-process figures a peer sent are counts (or an age) of the right type."""
    for key in ("index", "pid", "inflight", "queued", "table_blocks"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise ValueError(f"{key} is not a count")
    if not isinstance(state["uptime_s"], (int, float)):
        raise ValueError("uptime_s is not a number")
    for v in state["workers"].values():
        for key in ("inflight", "blocks"):
            if isinstance(v[key], bool) or not isinstance(v[key], int) or v[key] < 0:
                raise ValueError(f"worker {key} is not a count")
        if v["age_ms"] is not None and not isinstance(v["age_ms"], (int, float)):
            raise ValueError("worker age_ms is not a number")
    for n in state["local_inflight"].values():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("local_inflight is not a count")
