"""What the bench reads from an sglang_ppd router besides its answers: the policy (``/stats``) and
the KV byte counters (``/metrics``), so a live result carries the bytes the router really moved.

Any other endpoint (stock SGLang, vLLM) answers neither: the policy and the bytes are then ``None``,
never 0. Everything read is untrusted: a value that is not what it should be is dropped, not used.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

KV_COUNTERS = {
    "transferred": "sglang_ppd_kv_bytes_transferred_total",
    "avoided": "sglang_ppd_kv_bytes_avoided_total",
}
MAX_KV_BYTES = 1 << 60
"""An exabyte: a counter above it is garbage, not traffic."""
MAX_BODY_BYTES = 1 << 22
POLICY_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class RouterView:
    policy: str | None = None
    kv_bytes: dict[str, int] | None = None
    """Counter values at the time of reading, by ``KV_COUNTERS`` key."""


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            if resp.status != 200:
                return None
            body: bytes = resp.read(MAX_BODY_BYTES + 1)
    except (OSError, ValueError):  # refused, timeout, HTTP error, bad URL
        return None
    if len(body) > MAX_BODY_BYTES:
        return None
    return body.decode("utf-8", "replace")


def parse_policy(stats_body: str | None) -> str | None:
    if stats_body is None:
        return None
    try:
        stats = json.loads(stats_body)
    except ValueError:
        return None
    policy = stats.get("policy") if isinstance(stats, dict) else None
    return policy if isinstance(policy, str) and POLICY_NAME.fullmatch(policy) else None


def parse_kv_counters(metrics_body: str | None) -> dict[str, int] | None:
    """Both counters from Prometheus text, or ``None`` unless both are present and sane."""
    if metrics_body is None:
        return None
    found: dict[str, int] = {}
    for line in metrics_body.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        for key, name in KV_COUNTERS.items():
            if parts[0] != name:
                continue
            try:
                value = float(parts[1])
            except ValueError:
                return None
            if not (math.isfinite(value) and 0 <= value <= MAX_KV_BYTES):
                return None
            found[key] = int(value)
    return found if len(found) == len(KV_COUNTERS) else None


def read_router(url: str) -> RouterView:
    base = url.rstrip("/")
    return RouterView(
        policy=parse_policy(_get(f"{base}/stats")),
        kv_bytes=parse_kv_counters(_get(f"{base}/metrics")),
    )


def kv_bytes_during(before: RouterView, after: RouterView) -> dict[str, int | None]:
    """Counter deltas over the run; ``None`` where unknown, or where a counter went down (the router
    restarted during the run, so the delta would be wrong)."""
    out: dict[str, int | None] = {}
    for key in KV_COUNTERS:
        b = None if before.kv_bytes is None else before.kv_bytes[key]
        a = None if after.kv_bytes is None else after.kv_bytes[key]
        out[key] = a - b if a is not None and b is not None and a >= b else None
    return out
