"""``python -m sglang_ppd.launch [--config configs/emulated-2p2d.yaml] [--port N] [--no-monitor]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from sglang_ppd.core.config import ConfigError, load_yaml
from sglang_ppd.helptext import HelpFormatter, plain
from sglang_ppd.launch.config import LaunchConfig
from sglang_ppd.launch.plan import Plan, make_plan
from sglang_ppd.launch.procs import ChildFailed, Supervisor, busy_ports, wait_healthy

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "emulated-2p2d.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sglang_ppd.launch", description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="launch YAML (LaunchConfig)")
    p.add_argument("--port", type=int, default=None, help="router port (default 30000, or the config's)")
    p.add_argument("--base-port", type=int, default=None, help="first worker port (overrides the config's)")
    p.add_argument("--no-monitor", action="store_true", help="run headless (also automatic without a TTY)")
    p.add_argument(
        "--log-dir", default=None,
        help="child logs (default: the config's, or a temporary directory, removed on a clean exit)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print every command line and exit")
    return p


def say(msg: str) -> None:
    # A closed stdout (the parent went away) must never stop launch from reaching its cleanup.
    with contextlib.suppress(OSError):
        print(msg, flush=True)


async def _run_until_stopped(sup: Supervisor, stop: asyncio.Event, monitor_url: str | None) -> None:
    monitor: asyncio.Task[None] | None = None
    if monitor_url is not None:
        from sglang_ppd.monitor.live import run_live

        monitor = asyncio.create_task(run_live(monitor_url, stop))
    stopped = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            sup.check_alive()
            if monitor is not None and monitor.done():
                monitor.result()  # the monitor failed: surface it
                monitor = None
            await asyncio.wait([stopped], timeout=0.5)
    finally:
        stopped.cancel()
        if monitor is not None:
            stop.set()
            await asyncio.gather(monitor, return_exceptions=True)


async def launch(plan: Plan, cfg: LaunchConfig, log_dir: Path, show_monitor: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    sup = Supervisor(log_dir)
    timeout_s = cfg.startup_timeout_s or (60.0 if cfg.backend == "emulated" else 1200.0)
    router_yaml = log_dir / "router.yaml"
    router_yaml.write_text(yaml.safe_dump(plan.router_config, sort_keys=False))
    try:
        say(
            f"starting {cfg.num_prefill} prefill + {cfg.num_decode} decode {cfg.backend} workers "
            f"(logs in {log_dir})"
        )
        for child in plan.workers:
            sup.start(child)
        await wait_healthy(sup, plan.workers, timeout_s, stop, say)
        say(f"starting the router (policy {plan.router_config['policy']})")
        sup.start(plan.router, ("--config", str(router_yaml)))
        await wait_healthy(sup, (plan.router,), timeout_s, stop, say)
        say(f"router ready: {plan.router_url}   (Ctrl-C stops the cluster)")
        await _run_until_stopped(sup, stop, plan.router_url if show_monitor else None)
        return 0
    except ChildFailed as exc:
        with contextlib.suppress(OSError):
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except asyncio.CancelledError:
        return 0
    finally:
        say("stopping the cluster ...")
        sup.stop_all()
        say("stopped.")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_yaml(LaunchConfig, args.config)
        if args.base_port is not None:
            cfg = cfg.model_copy(update={"base_port": args.base_port})
        plan = make_plan(cfg, args.port)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for child in (*plan.workers, plan.router):
            env = " ".join(f"{k}={v}" for k, v in child.env.items())
            say(f"{child.name}: {env + ' ' if env else ''}{shlex.join(child.argv)}")
        say(yaml.safe_dump(plan.router_config, sort_keys=False))
        return 0
    busy = busy_ports(cfg.host, plan.ports)
    if busy:
        print(
            f"error: port(s) {', '.join(map(str, busy))} on {cfg.host} are already in use; stop what "
            "listens there or pick other ports with --base-port / --port",
            file=sys.stderr,
        )
        return 2
    temporary = not (args.log_dir or cfg.log_dir)
    log_dir = Path(args.log_dir or cfg.log_dir or tempfile.mkdtemp(prefix="sglang-ppd-launch-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    show_monitor = cfg.monitor and not args.no_monitor and sys.stdout.isatty()
    rc = asyncio.run(launch(plan, cfg, log_dir, show_monitor))
    if temporary and rc == 0:  # nothing went wrong, so nobody needs them; --log-dir keeps them
        shutil.rmtree(log_dir, ignore_errors=True)
    elif temporary:
        say(f"logs kept in {log_dir}")
    return rc
