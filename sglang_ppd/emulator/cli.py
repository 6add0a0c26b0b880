"""``sglang-ppd emulate``: run one emulated SGLang worker (prefill or decode) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import Any

import zmq.asyncio
from aiohttp import web

from sglang_ppd.core.config import ConfigError
from sglang_ppd.core.costmodel import DEFAULT_PROFILE, load_profile
from sglang_ppd.core.types import Role
from sglang_ppd.emulator.bootstrap import TransferHandler
from sglang_ppd.emulator.config import DEFAULT_LINK_BYTES_PER_S, EngineConfig
from sglang_ppd.emulator.engine import Engine
from sglang_ppd.emulator.publishers import KvEventPublisher, LoadPublisher
from sglang_ppd.emulator.reports import Ports, load_stat_msg, telemetry_msg
from sglang_ppd.emulator.server import build_app
from sglang_ppd.eventloop import install_uvloop
from sglang_ppd.helptext import HelpFormatter, plain

DEFAULT_BOOTSTRAP_PORT = 8998  # SGLang's --disaggregation-bootstrap-port default
SHUTDOWN_S = 2.0
ZMQ_TERM_S = 2.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sglang-ppd emulate", description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("--role", choices=[r.value for r in Role], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--bootstrap-port",
        type=int,
        default=DEFAULT_BOOTSTRAP_PORT,
        help="prefill only: the PD bootstrap (KV hand-off) port",
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="cost profile name or YAML path")
    p.add_argument("--model-name", default=None, help="served model name (default: emulated/<profile>)")
    p.add_argument(
        "--ppd",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="decode only: honour do_local_prefill (local and deflected prefill)",
    )
    p.add_argument(
        "--conditional-agg",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="decode only: honour do_local_prefill as a stock server with upstream's "
        "--disaggregation-decode-enable-conditional-agg would (SGLang draft PR #34773), "
        "without the sglang_ppd extension's fields",
    )
    p.add_argument(
        "--decode-radix-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode only: keep finished KV in the radix cache (default: on with --ppd)",
    )
    p.add_argument("--page-size", type=int, default=None, help="default: the profile's page size")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="wall seconds per modelled second (1 = real time, 0 = no modelled compute)",
    )
    p.add_argument("--kv-capacity-tokens", type=int, default=None)
    p.add_argument("--chunked-prefill-size", type=int, default=None)
    p.add_argument(
        "--tbt-budget-ms",
        type=float,
        default=None,
        help="decode only: cap on mixed prefill+decode iterations while decodes run",
    )
    p.add_argument(
        "--link-bandwidth-gbs",
        type=float,
        default=DEFAULT_LINK_BYTES_PER_S / 1e9,
        help="prefill only: KV link bandwidth in GB/s",
    )
    p.add_argument("--kv-events-port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--kv-replay-port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--load-port", type=int, default=0, help="LoadStat PUB port; 0 picks a free port")
    p.add_argument("--telemetry-port", type=int, default=0, help="WorkerTelemetry PUB port; 0 picks one")
    p.add_argument(
        "--telemetry-period-ms",
        type=float,
        default=100.0,
        help="LoadStat + WorkerTelemetry period in model time, scaled by --time-scale "
        "(the simulator and worker extension default)",
    )
    p.add_argument("--transfer-timeout-s", type=float, default=60.0)
    return p


def engine_config(args: argparse.Namespace) -> EngineConfig:
    profile = load_profile(args.profile)
    role = Role(args.role)
    return EngineConfig(
        role=role,
        profile=profile,
        model_name=args.model_name or f"emulated/{profile.name}",
        ppd=(args.ppd or args.conditional_agg) and role is Role.DECODE,
        conditional_agg=args.conditional_agg and role is Role.DECODE,
        decode_radix_cache=(args.ppd or args.conditional_agg)
        if args.decode_radix_cache is None
        else args.decode_radix_cache,
        page_size=args.page_size or profile.page_size,
        time_scale=args.time_scale,
        kv_capacity_tokens=args.kv_capacity_tokens,
        chunked_prefill_size=args.chunked_prefill_size,
        tbt_budget_ms=args.tbt_budget_ms,
        link_bandwidth_bytes_per_s=args.link_bandwidth_gbs * 1e9,
        transfer_timeout_s=args.transfer_timeout_s,
    )


MIN_PUBLISH_PERIOD_S = 0.005
"""Fast-forward runs (time_scale < 0.05) publish no faster than this, to spare the CPU."""


def publish_period_s(period_ms: float, time_scale: float) -> float:
    """The wall-clock publish period. The period is model time, like the simulator's
    ``publish_period_ms``: the load a router sees is then as many modelled milliseconds (iterations,
    arrivals) stale as in the simulator, so policies decide alike at any ``--time-scale`` (slow
    motion publishes less often in wall time). A router in front judges ages in wall time, so its
    ``max_telemetry_age_ms`` must scale alike. Time scale 0 has no model clock: the period is wall."""
    if time_scale <= 0:
        return period_ms / 1000.0
    return max(period_ms / 1000.0 * time_scale, MIN_PUBLISH_PERIOD_S)


async def _publish_loads(engine: Engine, pub: LoadPublisher, url: str, period_s: float) -> None:
    seq = 0
    while True:
        pub.publish(load_stat_msg(engine), telemetry_msg(engine, url, seq))
        seq += 1
        await asyncio.sleep(period_s)


async def serve(args: argparse.Namespace, cfg: EngineConfig) -> None:
    ctx = zmq.asyncio.Context()
    bind = "*" if args.host in ("0.0.0.0", "::") else args.host
    kv_pub = KvEventPublisher(
        ctx, f"tcp://{bind}:{args.kv_events_port or '*'}", f"tcp://{bind}:{args.kv_replay_port or '*'}"
    )
    load_pub = LoadPublisher(
        ctx, f"tcp://{bind}:{args.load_port or '*'}", f"tcp://{bind}:{args.telemetry_port or '*'}"
    )
    engine = Engine(cfg)
    engine.publish_events = kv_pub.publish
    prefill = cfg.role is Role.PREFILL
    ports = Ports(
        args.port,
        args.bootstrap_port if prefill else None,
        kv_pub.port,
        kv_pub.replay_port,
        load_pub.load_port,
        load_pub.telemetry_port,
    )
    # Handler cancellation: a client that hangs up aborts its request (SGLang checks for disconnects
    # too), and a decode server that hangs up on a room drops the room's request on P.
    opts: dict[str, Any] = {"access_log": None, "shutdown_timeout": SHUTDOWN_S, "handler_cancellation": True}
    runners = [web.AppRunner(build_app(engine, ports), **opts)]
    if prefill:
        handler = TransferHandler(
            engine.rooms, engine.link, engine.kv_sent, cfg.transfer_timeout_s, on_gone=engine.room_gone
        )
        runners.append(web.AppRunner(handler.app(), **opts))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine.start()
    kv_pub.start()
    url = f"http://{args.host}:{args.port}"
    period_s = publish_period_s(args.telemetry_period_ms, cfg.time_scale)
    pub_task = asyncio.create_task(_publish_loads(engine, load_pub, url, period_s))
    try:
        for runner, port in zip(runners, (args.port, args.bootstrap_port), strict=False):
            await runner.setup()
            await web.TCPSite(runner, args.host, port).start()
        print(
            f"emulated {cfg.role.value} worker ({cfg.profile.name}, time_scale={cfg.time_scale}) on {url}"
            + (f", bootstrap port {args.bootstrap_port}" if prefill else "")
            + (", conditional-agg" if cfg.conditional_agg else ", ppd" if cfg.ppd else ""),
            flush=True,
        )
        await stop.wait()
    finally:
        pub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pub_task
        await engine.close()  # ends every open request, so the HTTP handlers return
        for runner in runners:
            await runner.cleanup()
        await kv_pub.close()
        load_pub.close()
        _terminate(ctx)


def _terminate(ctx: zmq.asyncio.Context) -> None:
    """Terminate the ZMQ context, but never wait on it for more than ``ZMQ_TERM_S``: with every
    socket closed at linger 0, ``zmq_ctx_term`` still blocked forever about once in ten stops where
    the whole cluster died at once (its launcher SIGKILLed), leaving this worker an orphan. The
    process exits right after, which frees whatever the context still held."""
    done = threading.Thread(target=ctx.destroy, kwargs={"linger": 0}, daemon=True)
    done.start()
    done.join(ZMQ_TERM_S)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = engine_config(args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    install_uvloop()
    try:
        asyncio.run(serve(args, cfg))
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
