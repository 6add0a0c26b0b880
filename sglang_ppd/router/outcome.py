"""What a served request leaves behind once its attempt has ended: the KV bytes its route moved or
spared, its session's latest decode worker, its prompt in the approximate prefix indexes, and (when
streamed) its TTFT, TPOT and SLO by turn class; and the upstream errors of the workers to blame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sglang_ppd.core.types import RouteKind
from sglang_ppd.router.attempt import Attempt
from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.service import Router


@dataclass(frozen=True, slots=True)
class Ending:
    """What the accounting needs of a request besides its attempt."""

    session: str | None
    turn_class: str
    """``"1"`` or ``"2+"``."""
    arrival_s: float


def record_finish(
    router: Router, att: Attempt, ending: Ending, output_len: int | None, streamed: bool
) -> None:
    """Accounting once a request has produced its first token."""
    m = router.metrics
    if att.route.kind is RouteKind.PD:
        m.kv_bytes_transferred += att.kv_bytes
    else:
        m.kv_bytes_avoided += att.kv_bytes
    router.sessions.remember(ending.session, att.decode_url)
    router.prefix.remember_prompt(att.urls(), att.prep.input_ids)
    if not streamed or att.first_token_s is None:
        return
    end = time.monotonic()
    tpot = (end - att.first_token_s) / (output_len - 1) if output_len is not None and output_len > 1 else None
    m.record_finish(
        ending.turn_class,
        att.first_token_s - ending.arrival_s,
        tpot,
        router.slo.ttft_ms / 1000.0,
        router.slo.tpot_ms / 1000.0,
    )


def count_upstream_error(router: Router, f: UpstreamFailure) -> None:
    """Failures of the workers to blame; a worker's own 4xx is an answer, not an upstream error."""
    if f.retryable or f.status >= 500:
        for url in f.workers:
            w = router.registry.get(url)
            router.metrics.upstream_errors[w.name if w is not None else url] += 1


def completion_tokens(obj: dict[str, Any] | None) -> int | None:
    if not isinstance(obj, dict):
        return None
    meta = obj.get("meta_info")
    value = meta.get("completion_tokens") if isinstance(meta, dict) else None
    return value if isinstance(value, int) else None
