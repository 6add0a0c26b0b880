"""The ``/server_info`` fields the router reads when it registers a worker.

From SGLang (``http_server.server_info``: every server argument, plus the ``kv_events`` block from
``describe_kv_events_publisher``, in ``ServerArgs`` in 0.5.17 and ``runtime_context`` in 0.5.23):
``disaggregation_mode`` ("prefill" / "decode" / "null"), ``disaggregation_bootstrap_port``,
``page_size``, ``dp_size``, ``served_model_name`` / ``model_path``, and::

    {"publisher": "zmq", "endpoint_host": "*", "endpoint_port_base": 5557, "topic": "",
     "block_size": <page_size>, "dp_size": 1,
     # 0.5.19+ with --load-publish-endpoint (LoadStat, sglang_ppd.protocol.load_stat):
     "load_endpoint_port_base": 5559, "load_topic": "load",
     # 0.5.23 (when the replay endpoint is tcp):
     "replay_endpoint_port_base": 5558}

A wildcard ``endpoint_host`` ("*", "0.0.0.0", "::") means "dial the worker URL's host";
rank ``r`` publishes on ``endpoint_port_base + r``.

sglang_ppd extensions (published by the sglang_ppd worker extension and the emulator; a stock
server simply lacks them, which is how it is recognised as stock):

- ``ppd_local_prefill: true``: the decode server honours ``do_local_prefill`` (local/deflect routes).
- ``ppd_telemetry_endpoint: "tcp://host:port"``: its :class:`~sglang_ppd.protocol.telemetry.
  WorkerTelemetry` PUB socket (wildcard hosts are replaced like ``endpoint_host``).
- ``kv_events.replay_endpoint_port_base``: the ROUTER replay socket of the KV-event publisher
  (0.5.17 has it in ``--kv-events-config`` but does not advertise it; 0.5.23 does, with this key).

Upstream's own decode-side local prefill (SGLang draft PR #34773, "conditional aggregation", in no
release yet): a stock decode server started with ``--disaggregation-decode-enable-conditional-agg``
lists ``disaggregation_decode_enable_conditional_agg: true`` among its server arguments and honours
``do_local_prefill`` itself. Without the sglang_ppd fields above it is routed local/deflect with
``do_local_prefill`` alone (:attr:`ServerInfo.upstream_local_prefill`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", ""})
MAX_DP_SIZE = 64
"""Most DP ranks the router subscribes to per worker: each rank costs ZMQ sockets from a context
shared by every worker (1,023 sockets by default), so one worker claiming a huge ``dp_size`` must
not starve the others. A ``kv_events`` block past it is ignored (the worker gets an approximate
index)."""
MAX_PORT = 65535


def zmq_bind_host(http_host: str) -> str:
    """Where a worker's ZMQ publishers bind: where its HTTP server listens (loopback by default);
    any wildcard HTTP host becomes ZMQ's ``*``."""
    return "*" if http_host in WILDCARD_HOSTS else http_host


LOCAL_PREFILL_FIELD = "ppd_local_prefill"
UPSTREAM_LOCAL_PREFILL_FIELD = "disaggregation_decode_enable_conditional_agg"
TELEMETRY_ENDPOINT_FIELD = "ppd_telemetry_endpoint"


@dataclass(frozen=True, slots=True)
class KvEventsInfo:
    endpoints: tuple[str, ...]
    """One SUB endpoint per DP rank."""
    topic: str
    block_size: int
    replay_endpoints: tuple[str, ...] | None = None
    load_endpoints: tuple[str, ...] | None = None
    load_topic: str = "load"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    disaggregation_mode: str | None
    bootstrap_port: int | None
    page_size: int
    model: str | None
    kv_events: KvEventsInfo | None
    supports_local_prefill: bool
    """Honours ``do_local_prefill``: the sglang_ppd worker extension, or upstream's own."""
    telemetry_endpoint: str | None
    upstream_local_prefill: bool = False
    """A stock server with upstream conditional aggregation (no sglang_ppd extension): send it
    ``do_local_prefill`` without this project's request fields."""


def _dial_host(endpoint_host: str, worker_url: str) -> str:
    host = endpoint_host if endpoint_host not in WILDCARD_HOSTS else (urlsplit(worker_url).hostname or "")
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _tcp(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def _resolve(endpoint: str, worker_url: str) -> str:
    if not endpoint.startswith("tcp://"):
        return endpoint
    body = endpoint[len("tcp://") :]
    host, _, port = body.rpartition(":")
    return _tcp(_dial_host(host, worker_url), int(port))


def _opt_int(info: dict[str, Any], key: str) -> int | None:
    value = info.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_kv_events(block: Any, worker_url: str) -> KvEventsInfo | None:
    if not isinstance(block, dict) or block.get("publisher") != "zmq":
        return None
    base = _opt_int(block, "endpoint_port_base")
    block_size = _opt_int(block, "block_size")
    if base is None or block_size is None or block_size <= 0:
        return None
    host = _dial_host(str(block.get("endpoint_host", "*")), worker_url)
    dp_size = 1 if block.get("dp_size") is None else _opt_int(block, "dp_size")
    if dp_size is None or not 1 <= dp_size <= MAX_DP_SIZE:
        return None
    replay_base = _opt_int(block, "replay_endpoint_port_base")
    load_base = _opt_int(block, "load_endpoint_port_base")
    for port_base in (base, replay_base, load_base):
        if port_base is not None and not 1 <= port_base <= MAX_PORT - dp_size + 1:
            return None

    def ranks(port_base: int | None) -> tuple[str, ...] | None:
        return None if port_base is None else tuple(_tcp(host, port_base + r) for r in range(dp_size))

    return KvEventsInfo(
        endpoints=ranks(base) or (),
        topic=str(block.get("topic") or ""),
        block_size=block_size,
        replay_endpoints=ranks(replay_base),
        load_endpoints=ranks(load_base),
        load_topic=str(block.get("load_topic") or "load"),
    )


def parse_server_info(body: Any, worker_url: str) -> ServerInfo:
    """Raises ``ValueError`` when the reply is not a JSON object."""
    if not isinstance(body, dict):
        raise ValueError("/server_info did not return a JSON object")
    mode = body.get("disaggregation_mode")
    model = body.get("served_model_name") or body.get("model_path")
    telemetry = body.get(TELEMETRY_ENDPOINT_FIELD)
    decode = mode == "decode"
    ppd = body.get(LOCAL_PREFILL_FIELD) is True
    upstream = decode and body.get(UPSTREAM_LOCAL_PREFILL_FIELD) is True
    return ServerInfo(
        disaggregation_mode=mode if isinstance(mode, str) else None,
        bootstrap_port=_opt_int(body, "disaggregation_bootstrap_port"),
        page_size=max(_opt_int(body, "page_size") or 1, 1),
        model=model if isinstance(model, str) else None,
        kv_events=parse_kv_events(body.get("kv_events"), worker_url),
        supports_local_prefill=ppd or upstream,
        telemetry_endpoint=_resolve(telemetry, worker_url) if isinstance(telemetry, str) else None,
        upstream_local_prefill=upstream and not ppd,
    )
