"""What launch starts: every child's command line, environment and health URL, from the config.

Pure (no processes, no I/O) so the exact SGLang command lines are tested without a GPU.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from sglang_ppd.core.config import ConfigError, validate
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import available_policies
from sglang_ppd.launch.config import LaunchConfig
from sglang_ppd.protocol.server_info import zmq_bind_host
from sglang_ppd.router.config import RouterConfig, SloConfig

DEFAULT_POLICY = "ppd_deflect"


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    argv: tuple[str, ...]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    workers: tuple[Child, ...]
    router: Child
    router_config: dict[str, Any]
    router_url: str
    ports: tuple[int, ...]
    """Every TCP port the cluster will listen on (checked free before anything starts)."""


def needs_decode_cache(policy: str) -> bool:
    """Whether the policy wants D to keep finished KV (``Policy.needs_decode_cache``)."""
    eps = available_policies()
    if policy not in eps:
        known = ", ".join(sorted(eps)) or "(none installed)"
        raise ConfigError(f"unknown policy {policy!r}; available policies: {known}")
    return bool(getattr(eps[policy].load(), "needs_decode_cache", True))


def _gpus(given: list[str] | None, start: int, n: int, tp: int, what: str) -> list[str]:
    if given is None:
        return [",".join(str(start * tp + i * tp + k) for k in range(tp)) for i in range(n)]
    if len(given) != n:
        raise ConfigError(f"sglang.{what} lists {len(given)} GPU sets for {n} servers; give one per server")
    return given


def _emulated(
    cfg: LaunchConfig, role: str, port: int, bootstrap: int | None, decode_cache: bool, tbt_budget_ms: float
) -> list[str]:
    e = cfg.emulator
    argv = [
        sys.executable,
        "-m",
        "sglang_ppd.cli",
        "emulate",
        "--role",
        role,
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--profile",
        cfg.profile,
        "--time-scale",
        str(e.time_scale),
        "--link-bandwidth-gbs",
        str(cfg.link_bandwidth_gb_s),
    ]
    if cfg.page_size is not None:
        argv += ["--page-size", str(cfg.page_size)]
    if bootstrap is not None:
        argv += ["--bootstrap-port", str(bootstrap)]
    if role == "decode":
        argv += ["--ppd" if cfg.ppd_decode else "--no-ppd"]
        argv += ["--decode-radix-cache" if decode_cache else "--no-decode-radix-cache"]
        argv += ["--tbt-budget-ms", str(tbt_budget_ms)]
    for flag, value in (
        ("--kv-capacity-tokens", e.kv_capacity_tokens),
        ("--chunked-prefill-size", e.chunked_prefill_size),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(e.extra_args)


def _sglang(
    cfg: LaunchConfig, role: str, port: int, bootstrap: int | None, decode_cache: bool, zmq_base: int
) -> list[str]:
    s = cfg.sglang
    if not s.model_path:
        raise ConfigError("backend: sglang needs sglang.model_path (a local model directory or HF id)")
    worker_ext = role == "decode" and cfg.ppd_decode
    module = "sglang_ppd.worker" if worker_ext else "sglang.launch_server"
    argv = [
        s.python,
        "-m",
        module,
        "--model-path",
        s.model_path,
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--disaggregation-mode",
        role,
        "--disaggregation-transfer-backend",
        s.transfer_backend,
        "--page-size",
        str(cfg.page_size or 1),
        "--tp-size",
        str(s.tp_size),
    ]
    if s.ib_device:
        argv += ["--disaggregation-ib-device", s.ib_device]
    if s.mem_fraction_static is not None:
        argv += ["--mem-fraction-static", str(s.mem_fraction_static)]
    if bootstrap is not None:
        argv += ["--disaggregation-bootstrap-port", str(bootstrap)]
    # ZMQ publishers bind where the HTTP server does: loopback unless the config's host is wider.
    zhost = zmq_bind_host(cfg.host)
    if s.kv_events:
        kv = {
            "publisher": "zmq",
            "endpoint": f"tcp://{zhost}:{zmq_base}",
            "replay_endpoint": f"tcp://{zhost}:{zmq_base + 1}",
            "topic": "",
        }
        argv += ["--kv-events-config", json.dumps(kv)]
    if s.load_publish:
        argv += ["--load-publish-endpoint", f"tcp://{zhost}:{zmq_base + 2}"]
    if role == "decode":
        if decode_cache:
            argv += ["--disaggregation-decode-enable-radix-cache"]
        if cfg.ppd_decode:
            argv += ["--enable-mixed-chunk"]
    argv += list(s.extra_args) + list(s.prefill_extra_args if role == "prefill" else s.decode_extra_args)
    if worker_ext:
        argv += [
            "--ppd-telemetry-endpoint",
            f"tcp://{zhost}:{zmq_base + 3}",
            "--ppd-worker-url",
            f"http://{cfg.host}:{port}",
            *s.worker_extra_args,
        ]
    return argv


def make_plan(cfg: LaunchConfig, port: int | None = None) -> Plan:
    if "workers" in cfg.router:
        raise ConfigError("router.workers is filled in by launch from num_prefill/num_decode; remove it")
    load_profile(cfg.profile)  # fail early on a bad profile name
    policy = str(cfg.router.get("policy", DEFAULT_POLICY))
    decode_cache = needs_decode_cache(policy)
    # As in the simulator: resident decodes' TBT budget defaults to the TPOT SLO.
    slo = validate(SloConfig, cfg.router.get("slo", {}), "router.slo")
    tbt_budget_ms = cfg.emulator.tbt_budget_ms or slo.tpot_ms
    sg = cfg.sglang
    p_gpus = _gpus(sg.prefill_gpus, 0, cfg.num_prefill, sg.tp_size, "prefill_gpus")
    d_gpus = _gpus(sg.decode_gpus, cfg.num_prefill, cfg.num_decode, sg.tp_size, "decode_gpus")
    next_port = cfg.base_port
    workers: list[Child] = []
    specs: list[dict[str, Any]] = []
    ports: list[int] = []
    roles = [("prefill", i) for i in range(cfg.num_prefill)] + [("decode", i) for i in range(cfg.num_decode)]
    for n, (role, i) in enumerate(roles):
        http = next_port
        bootstrap = next_port + 1 if role == "prefill" else None
        next_port += 2 if role == "prefill" else 1
        url = f"http://{cfg.host}:{http}"
        ports += [http] if bootstrap is None else [http, bootstrap]
        if cfg.backend == "emulated":
            argv, env = _emulated(cfg, role, http, bootstrap, decode_cache, tbt_budget_ms), {}
        else:
            argv = _sglang(cfg, role, http, bootstrap, decode_cache, sg.zmq_port_base + 4 * n)
            ports += range(sg.zmq_port_base + 4 * n, sg.zmq_port_base + 4 * n + 4)
            env = {"CUDA_VISIBLE_DEVICES": (p_gpus if role == "prefill" else d_gpus)[i]}
        workers.append(Child(f"{role}-{i}", tuple(argv), f"{url}/health", env))
        specs.append({"url": url, "role": role, **({"bootstrap_port": bootstrap} if bootstrap else {})})
    router_cfg: dict[str, Any] = {
        "policy": policy,
        "profile": cfg.profile,
        "link_bandwidth_gb_s": cfg.link_bandwidth_gb_s,
        "host": cfg.host,
        **cfg.router,
        "workers": specs,
    }
    if port is not None:
        router_cfg["port"] = port
    if cfg.backend == "sglang" and "tokenizer" not in cfg.router:
        router_cfg["tokenizer"] = sg.model_path
    if cfg.backend == "emulated" and cfg.emulator.time_scale > 1:
        # Slow-motion workers publish every period of *model* time, so the router judges staleness
        # on the same model-time limit; faster-than-real runs keep the wall-clock limit.
        scaled = slo.max_telemetry_age_ms * cfg.emulator.time_scale
        router_cfg["slo"] = {**cfg.router.get("slo", {}), "max_telemetry_age_ms": scaled}
    validated = validate(RouterConfig, router_cfg, "the launch config's router section")
    host = validated.host if validated.host not in ("0.0.0.0", "::") else "127.0.0.1"
    router_url = f"http://{host}:{validated.port}"
    router = Child("router", (sys.executable, "-m", "sglang_ppd.cli", "router"), f"{router_url}/health")
    ports.append(validated.port)
    twice = sorted({p for p in ports if ports.count(p) > 1})
    if twice:
        raise ConfigError(
            f"port(s) {', '.join(map(str, twice))} would be used twice: the workers take the ports from "
            f"base_port {cfg.base_port} up ({', '.join(map(str, ports[:-1]))}); pick another router port "
            "or base_port"
        )
    return Plan(tuple(workers), router, validated.model_dump(mode="json"), router_url, tuple(ports))
