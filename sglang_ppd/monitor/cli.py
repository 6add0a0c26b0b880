"""``sglang-ppd monitor --router URL``: live dashboard of a running sglang_ppd router."""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
from rich.console import Console

from sglang_ppd.helptext import HelpFormatter, plain
from sglang_ppd.monitor.live import fetch_stats, run_live
from sglang_ppd.monitor.render import render


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sglang-ppd monitor", description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("--router", default="http://127.0.0.1:30000", help="router base URL")
    p.add_argument("--interval-s", type=float, default=0.5)
    p.add_argument("--once", action="store_true", help="print one frame and exit (no TTY needed)")
    p.add_argument("--width", type=int, default=None, help="console width for --once")
    return p


async def _once(url: str, console: Console) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            stats = await fetch_stats(session, url)
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as exc:
            console.print(render(None, url, f"cannot read {url}/stats: {exc}", console.width))
            return 1
    console.print(render(stats, url, width=console.width))
    return 0


async def _live(url: str, interval_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_live(url, stop, interval_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = args.router.rstrip("/")
    if args.once:
        return asyncio.run(_once(url, Console(width=args.width)))
    return asyncio.run(_live(url, args.interval_s))


if __name__ == "__main__":
    raise SystemExit(main())
