"""``--ppd-*`` options of ``python -m sglang_ppd.worker`` and their separation from SGLang's own."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

from sglang_ppd.protocol.server_info import zmq_bind_host

ENV_VAR = "SGLANG_PPD_WORKER_OPTIONS"
"""The options travel to SGLang's spawned scheduler process through the environment."""

PREFIX = "--ppd-"
RADIX_FLAG = "--disaggregation-decode-enable-radix-cache"
ROLE_SWITCH_FLAG = "--enable-pd-role-switch"


@dataclass(frozen=True, slots=True)
class PpdOptions:
    tbt_slo_ms: float | None = None
    min_chunk_len: int = 64
    max_chunk_len: int = 2048
    prior_ms_per_token: float = 0.02
    prior_mixed_overhead_ms: float = 2.0
    telemetry_endpoint: str | None = None
    telemetry_period_ms: float = 100.0
    worker_url: str | None = None
    iter_log: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PpdOptions:
        raw = (environ if environ is not None else dict(os.environ)).get(ENV_VAR)
        return cls(**json.loads(raw)) if raw else cls()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sglang_ppd.worker", add_help=False, allow_abbrev=False)
    p.add_argument(
        "--ppd-tbt-slo-ms",
        type=float,
        default=None,
        help="TBT target of resident decodes; sizes the per-iteration local-prefill budget",
    )
    p.add_argument(
        "--ppd-min-chunk-len",
        type=int,
        default=64,
        help="local-prefill tokens always allowed per iteration, so deflected work progresses",
    )
    p.add_argument("--ppd-max-chunk-len", type=int, default=2048)
    p.add_argument(
        "--ppd-prior-ms-per-token",
        type=float,
        default=0.02,
        help="prefill cost per token assumed until mixed iterations have been measured",
    )
    p.add_argument("--ppd-prior-mixed-overhead-ms", type=float, default=2.0)
    p.add_argument(
        "--ppd-telemetry-endpoint",
        default=None,
        help="ZMQ PUB bind endpoint (default tcp://<--host>:<--port + 100>)",
    )
    p.add_argument("--ppd-telemetry-period-ms", type=float, default=100.0)
    p.add_argument("--ppd-worker-url", default=None, help="URL the router knows this worker by")
    p.add_argument("--ppd-iter-log", default=None, help="append one JSON line per scheduler iteration")
    return p


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(ppd args, sglang args). Every ``--ppd-*`` option takes one value (``--x v`` or ``--x=v``)."""
    ppd: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(PREFIX):
            if "=" in arg:
                ppd.append(arg)
            elif i + 1 < len(argv):
                ppd += [arg, argv[i + 1]]
                i += 1
            else:
                raise SystemExit(f"{arg} needs a value")
        else:
            rest.append(arg)
        i += 1
    return ppd, rest


def _sglang_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse(argv: list[str]) -> tuple[PpdOptions, list[str]]:
    """Parses the worker's command line into its options and the args handed to SGLang.

    The decode radix cache is what lets an append-prefill reuse a conversation's KV, so it is
    switched on when missing. Raises ``SystemExit`` with a usage message on bad input.
    """
    ppd_args, sglang_args = split_args(argv)
    ns = _parser().parse_args(ppd_args)
    if _sglang_value(sglang_args, "--disaggregation-mode") != "decode":
        raise SystemExit(
            "sglang_ppd.worker extends decode servers: pass --disaggregation-mode decode "
            "(start prefill servers with python -m sglang.launch_server)"
        )
    if any(a.split("=", 1)[0] == ROLE_SWITCH_FLAG for a in sglang_args):
        # A flip tears down and rebuilds the decode queues the extension's state is built on.
        raise SystemExit(f"sglang_ppd.worker does not support {ROLE_SWITCH_FLAG} (SGLang 0.5.23)")
    if RADIX_FLAG not in sglang_args:
        sglang_args = [*sglang_args, RADIX_FLAG]
    port = int(_sglang_value(sglang_args, "--port") or 30000)
    host = _sglang_value(sglang_args, "--host") or "127.0.0.1"
    opts = PpdOptions(
        tbt_slo_ms=ns.ppd_tbt_slo_ms,
        min_chunk_len=ns.ppd_min_chunk_len,
        max_chunk_len=ns.ppd_max_chunk_len,
        prior_ms_per_token=ns.ppd_prior_ms_per_token,
        prior_mixed_overhead_ms=ns.ppd_prior_mixed_overhead_ms,
        # Bound like SGLang's HTTP server: loopback unless the operator chose a wider --host.
        telemetry_endpoint=ns.ppd_telemetry_endpoint or f"tcp://{zmq_bind_host(host)}:{port + 100}",
        telemetry_period_ms=ns.ppd_telemetry_period_ms,
        worker_url=ns.ppd_worker_url or f"http://{host}:{port}",
        iter_log=ns.ppd_iter_log,
    )
    if opts.min_chunk_len <= 0 or opts.max_chunk_len < opts.min_chunk_len:
        raise SystemExit("need 0 < --ppd-min-chunk-len <= --ppd-max-chunk-len")
    return opts, sglang_args
