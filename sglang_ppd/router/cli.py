"""``sglang-ppd router``: flags compatible with sglang_router's PD mode, plus ``--config`` YAML.

    sglang-ppd router --prefill http://p0:30001 8998 --decode http://d0:30002 --port 30000 \\
        --policy ppd_deflect --policy-param key=value --tokenizer /models/llama/

Flags override the YAML (``RouterConfig``); ``--prefill``/``--decode`` add to its ``workers``.
``--processes N`` runs N router processes on the port (``router.processes``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from sglang_ppd.core.config import ConfigError, load_yaml, validate
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import load_policy, parse_param_overrides
from sglang_ppd.eventloop import install_uvloop
from sglang_ppd.helptext import HelpFormatter, plain, policies_epilog
from sglang_ppd.router import security
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.peers import Group
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import load_tokenizer


class _PrefillAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        vals = list(values)
        if not 1 <= len(vals) <= 2:
            parser.error("--prefill takes URL [BOOTSTRAP_PORT]")
        port: int | None = None
        if len(vals) == 2 and vals[1].lower() != "none":
            if not vals[1].isdigit():
                parser.error(f"--prefill bootstrap port must be an integer, got {vals[1]!r}")
            port = int(vals[1])
        getattr(ns, self.dest).append({"url": vals[0], "role": "prefill", "bootstrap_port": port})


def parser() -> argparse.ArgumentParser:
    # Flags default to None so that --config can set them; the help shows RouterConfig's defaults.
    d = RouterConfig.model_validate({})
    p = argparse.ArgumentParser(
        prog="sglang-ppd router", description=plain(__doc__), formatter_class=HelpFormatter,
        epilog=policies_epilog(d.policy),
    )  # fmt: skip
    p.add_argument("--config", help="router YAML (RouterConfig); flags override it")
    p.add_argument(
        "--prefill",
        nargs="+",
        action=_PrefillAction,
        default=[],
        metavar="URL [BOOTSTRAP_PORT]",
        help="a prefill worker (repeatable)",
    )
    p.add_argument(
        "--decode", action="append", default=[], metavar="URL", help="a decode worker (repeatable)"
    )
    p.add_argument("--host", help=f"address to listen on (default: {d.host})")
    p.add_argument("--port", type=int, help=f"(default: {d.port})")
    p.add_argument("--policy", help=f"a policy name, listed below (default: {d.policy})")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--profile", help=f"cost profile name or YAML path (default: {d.profile})")
    p.add_argument("--tokenizer", help="local HF tokenizer directory (default: built-in byte tokenizer)")
    p.add_argument("--model-name")
    p.add_argument("--slo-ttft-ms", type=float, help=f"(default: {d.slo.ttft_ms:g})")
    p.add_argument("--slo-tpot-ms", type=float, help=f"(default: {d.slo.tpot_ms:g})")
    p.add_argument(
        "--max-telemetry-age-ms", type=float,
        help=f"older load telemetry counts as unknown (default: {d.slo.max_telemetry_age_ms:g})",
    )  # fmt: skip
    p.add_argument("--api-key", help="require Authorization: Bearer KEY (or set SGLANG_PPD_API_KEY)")
    p.add_argument(
        "--admin-key", help="key for POST/DELETE /workers (or SGLANG_PPD_ADMIN_KEY; default: the API key)"
    )
    p.add_argument(
        "--pd-disaggregation", action="store_true", help="accepted for sglang_router compatibility"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="N router processes sharing the port (SO_REUSEPORT); /metrics and /stats sum over them",
    )
    p.add_argument("--log-level", default="info", help="debug, info, warning or error")
    return p


def build_config(args: argparse.Namespace) -> RouterConfig:
    data: dict[str, Any] = load_yaml(RouterConfig, args.config).model_dump() if args.config else {}
    data.setdefault("workers", [])
    data["workers"] = [*data["workers"], *args.prefill, *({"url": u, "role": "decode"} for u in args.decode)]
    for key in ("host", "port", "policy", "profile", "tokenizer", "model_name", "api_key", "admin_key"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.policy_param:
        data["policy_params"] = {**data.get("policy_params", {}), **parse_param_overrides(args.policy_param)}
    slo = dict(data.get("slo", {}))
    for flag, key in (
        ("slo_ttft_ms", "ttft_ms"),
        ("slo_tpot_ms", "tpot_ms"),
        ("max_telemetry_age_ms", "max_telemetry_age_ms"),
    ):
        if getattr(args, flag) is not None:
            slo[key] = getattr(args, flag)
    data["slo"] = slo
    return validate(RouterConfig, security.keys_from_env(data), "router flags and --config")


def make_router(cfg: RouterConfig) -> Router:
    profile = load_profile(cfg.profile)
    policy = load_policy(cfg.policy, cfg.policy_params, profile)
    return Router(cfg, policy, profile, load_tokenizer(cfg.tokenizer), cfg.policy)


async def _serve(router: Router, group: Group | None) -> None:
    from sglang_ppd.router.app import start_server

    runner, port = await start_server(router, router.cfg.host, router.cfg.port, group)
    what = "router" if group is None else f"router process {group.index}"
    print(
        f"sglang_ppd {what} listening on http://{router.cfg.host}:{port} (policy {router.policy_name})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _logging(log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_process(cfg: RouterConfig, log_level: str, group: Group | None) -> None:
    """One router process: alone, or one of a ``--processes N`` group (then called in the child)."""
    if group is not None:
        _logging(log_level)
        security.install_log_redaction(cfg)
    router = make_router(cfg)
    install_uvloop()
    asyncio.run(_serve(router, group))


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    _logging(args.log_level)
    if args.processes < 1:
        print(f"error: --processes must be >= 1, got {args.processes}", file=sys.stderr)
        return 2
    try:
        router_cfg = build_config(args)
        security.install_log_redaction(router_cfg)
        make_router(router_cfg)  # every error the children would hit, once, here
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.processes > 1:
        from sglang_ppd.router.processes import run_group

        return run_group(router_cfg, args.processes, args.log_level)
    run_process(router_cfg, args.log_level, None)
    return 0
