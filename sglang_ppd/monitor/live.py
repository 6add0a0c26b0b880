"""The rich ``Live`` loop: poll the router's ``/stats`` and redraw with :func:`render`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live

from sglang_ppd.monitor.render import render


async def fetch_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/stats", timeout=aiohttp.ClientTimeout(total=2)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"/stats answered HTTP {resp.status}")
        body = await resp.json()
        if not isinstance(body, dict):
            raise RuntimeError("/stats did not return a JSON object")
        return body


async def run_live(
    url: str, stop: asyncio.Event, interval_s: float = 0.5, console: Console | None = None
) -> None:
    """Redraw every ``interval_s`` until ``stop`` is set. A failed poll keeps the last frame and says
    why at the top, so a router restart does not blank the screen."""
    stats: dict[str, Any] | None = None
    async with aiohttp.ClientSession() as session:
        console = console or Console()
        first = render(None, url, width=console.width)
        with Live(first, console=console, refresh_per_second=4, screen=False) as live:
            while not stop.is_set():
                error = None
                try:
                    stats = await fetch_stats(session, url)
                except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as exc:
                    error = f"cannot read {url}/stats: {exc or type(exc).__name__}"
                # The width is read each frame, so a resized terminal gets the layout that fits it.
                live.update(render(stats, url, error, console.width))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
