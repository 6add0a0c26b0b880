"""The router's configuration: one StrictModel, filled from ``--config`` YAML and CLI flags."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sglang_ppd.core.config import StrictModel


def normalize_url(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"worker URL {url!r} must be http(s)://host:port")
    return f"{parts.scheme}://{parts.netloc}".rstrip("/")


class WorkerSpec(StrictModel):
    url: str
    role: str = Field(pattern="^(prefill|decode)$")
    bootstrap_port: int | None = Field(None, gt=0, lt=65536)
    """Prefill only; ``None`` reads ``disaggregation_bootstrap_port`` from ``/server_info``."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)


class SloConfig(StrictModel):
    ttft_ms: float = Field(2000.0, gt=0)
    tpot_ms: float = Field(100.0, gt=0)
    w_ttft: float = Field(1.0, ge=0)
    w_tpot: float = Field(1.0, ge=0)
    max_telemetry_age_ms: float = Field(1000.0, gt=0)


class RouterConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(30000, ge=0, lt=65536)
    workers: list[WorkerSpec] = Field(default_factory=list)
    policy: str = "ppd_deflect"
    policy_params: dict[str, Any] = Field(default_factory=dict)
    profile: str = "h100-llama31-8b"
    """Cost profile (name under configs/profiles or a YAML path) the policy estimates with."""
    tokenizer: str | None = None
    """Path to a local HF tokenizer directory; ``None`` is the built-in byte tokenizer."""
    model_name: str | None = None
    """Served model name for ``/v1/models`` and OpenAI replies; ``None`` asks the first worker."""
    slo: SloConfig = Field(default_factory=lambda: SloConfig.model_validate({}))
    api_key: str | None = None
    admin_key: str | None = None
    """Guards POST/DELETE ``/workers``; ``None`` falls back to ``api_key``."""
    link_bandwidth_gb_s: float = Field(25.0, gt=0)
    """P->D KV link bandwidth the policy assumes (GB/s)."""
    self_correct: bool = False
    """Correct the cost profile's prefill estimates per worker from realized TTFTs (a bounded
    EWMA ratio, ``core.correction``), shown in ``/stats`` and the monitor. Off by default until the
    evaluation grid covers it; ``benchmarks/self_correction.py`` shows it converging."""
    default_bootstrap_port: int = Field(8998, gt=0, lt=65536)
    default_max_tokens: int = Field(1024, gt=0)
    """``max_tokens`` for chat requests that give none."""
    max_request_tokens: int = Field(1_000_000, gt=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_connections: int = Field(16384, gt=0)
    """Open client connections at most (lowered to the file-handle limit minus a reserve); past it
    a new connection gets 503 and is closed."""
    header_timeout_s: float = Field(30.0, gt=0)
    """A client connection must send its request headers within this of opening (or of its last
    reply); an idle or stalled one is closed."""
    body_timeout_s: float = Field(30.0, gt=0)
    """A request body must arrive whole within this (else 408); no in-flight slot is held meanwhile."""
    write_timeout_s: float = Field(30.0, gt=0)
    """A streaming client that takes none of its reply for this long (its socket buffers full) is
    cut and its upstream request aborted, so a client that stops reading holds no worker."""
    max_inflight: int = Field(4096, gt=0)
    max_queued: int = Field(4096, ge=0)
    """Requests waiting for an in-flight slot; past this the router answers 429."""
    connect_timeout_s: float = Field(5.0, gt=0)
    first_token_timeout_s: float = Field(600.0, gt=0)
    """Base wait for an attempt's first token (a whole reply when not streaming); before it no
    shorter read timeout applies, however long the worker's queue keeps it silent."""
    first_token_timeout_per_ktok_s: float = Field(2.0, ge=0)
    """Added to ``first_token_timeout_s`` per 1,000 tokens of the prompt plus the prefill queue its
    prefilling worker last reported (a 100k-token prompt behind 100k queued tokens: +400 s)."""
    read_timeout_s: float = Field(120.0, gt=0)
    """Longest silence between two streamed chunks from a worker once the first token came."""
    request_timeout_s: float = Field(3600.0, gt=0)
    control_timeout_s: float = Field(5.0, gt=0)
    """``/server_info``, ``/health``, ``/v1/loads`` and ``/abort_request`` calls."""
    decode_silent_after_s: float = Field(3.0, gt=0)
    """A decode worker whose telemetry stopped this long ago, while another decode's is fresher,
    gets no new request (a stopped process keeps its listener); longer than the guard's
    ``slo.max_telemetry_age_ms`` so that a busy machine's late samples do not halve the decode pool."""
    health_interval_s: float = Field(2.0, gt=0)
    health_failures: int = Field(3, gt=0)
    """Consecutive failed health checks before a worker stops receiving requests."""
    breaker_failures: int = Field(5, gt=0)
    """Consecutive failed requests that open a worker's circuit breaker (no new requests)."""
    breaker_cooldown_s: float = Field(5.0, gt=0)
    """How long an open breaker blocks its worker before one trial request may pass."""
    max_queue_wait_s: float = Field(30.0, gt=0)
    """Longest wait for an in-flight slot; past it the queued request gets 503 with Retry-After."""
    loads_poll_interval_s: float = Field(0.5, gt=0)
    approx_page_size: int = Field(16, gt=0)
    approx_max_pages: int = Field(1_000_000, gt=0)
    exact_max_blocks: int = Field(8_000_000, gt=0)
    """Cap per worker on indexed KV blocks; past it the index resyncs (clears) instead of growing."""
