"""Latency estimates from a worker snapshot and the additive step model (``core.costmodel``).

Everything here is closed-form over plain floats copied from the :class:`CostProfile` once, because
it runs inside every routing decision (the decision-time target is p99 <= 50 us with 16 workers).

Stale or missing telemetry: every estimate falls back the same way for every worker, on the
router's exact ``num_inflight`` count, assuming each in-flight request is as long as this one.
"""

from __future__ import annotations

import math

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.stepmodel import StepModel
from sglang_ppd.core.types import LinkSnapshot, WorkerSnapshot
from sglang_ppd_policies.view import View


class Estimator:
    """Step-model estimates for routing. Built once per policy from its cost profile."""

    __slots__ = (
        "dec_base_ms",
        "chunk_len",
        "kv_bytes_per_token",
        "transfer_setup_ms",
        "step",
    )

    def __init__(self, profile: CostProfile) -> None:
        s = profile.step
        self.dec_base_ms = s.decode_base_ms
        self.chunk_len = profile.chunked_prefill_size
        self.kv_bytes_per_token = profile.kv_bytes_per_token
        self.transfer_setup_ms = profile.transfer_setup_ms
        self.step = StepModel.of(profile)

    # -- decode side -------------------------------------------------------------------------------

    def decode_step_ms(self, d: WorkerSnapshot, fresh: bool, prompt_len: int) -> float:
        """One decode-only iteration on ``d`` (:meth:`StepModel.decode_step_ms`)."""
        return self.step.decode_step_ms(d, fresh, prompt_len)

    def chunked_ms(
        self, new_len: int, cached_len: int, chunk_len: int, decode_extra_ms: float, factor: float = 1.0
    ) -> float:
        """A chunked prefill mixed into decodes (:meth:`StepModel.chunked_ms`)."""
        return self.step.chunked_ms(new_len, cached_len, chunk_len, decode_extra_ms, factor)

    def max_chunk_len(
        self, context_len: int, decode_extra_ms: float, budget_ms: float, factor: float = 1.0
    ) -> int:
        """Largest chunk within ``budget_ms`` (:meth:`StepModel.max_chunk_len`, the one chunk rule)."""
        return self.step.max_chunk_len(context_len, decode_extra_ms, budget_ms, factor)

    # -- prefill side ------------------------------------------------------------------------------

    def p_queue_ms(self, p: WorkerSnapshot, fresh: bool, prompt_len: int) -> float:
        """Time until a new request starts prefilling on ``p``: its queued prefill tokens at full
        chunks (:meth:`StepModel.queue_ms`), at ``p``'s measured ``prefill_cost_factor``; stale,
        the router's in-flight requests there, each as long as this one."""
        q = p.queued_prefill_tokens if fresh and p.queued_prefill_tokens is not None else None
        if q is None:
            q = p.num_inflight * prompt_len
        return self.step.queue_ms(q, prompt_len, p.prefill_cost_factor)

    def p_prefill_ms(self, v: View, p: WorkerSnapshot) -> float:
        """``p``'s prefill of the prompt tokens it lacks (over its hit, in full chunks), at its
        measured ``prefill_cost_factor``."""
        prompt_len = v.req.prompt_len
        hit = v.hits.get(p.worker_id, 0)
        return self.chunked_ms(prompt_len - hit, hit, self.chunk_len, 0.0, p.prefill_cost_factor)

    def link_wait_ms(self, link: LinkSnapshot) -> float:
        """How long a new transfer waits behind the bytes already queued on the link."""
        return 1000.0 * link.queued_bytes / link.bandwidth_bytes_per_s

    def transfer_ms(self, num_tokens: int, link: LinkSnapshot) -> float:
        """KV of ``num_tokens`` over the P->D link, behind the bytes already queued on it."""
        if num_tokens <= 0:
            return 0.0
        nbytes = num_tokens * self.kv_bytes_per_token + link.queued_bytes
        return self.transfer_setup_ms + 1000.0 * nbytes / link.bandwidth_bytes_per_s

    def pd_ttft_ms(self, v: View, p: WorkerSnapshot, d: WorkerSnapshot) -> float:
        """TTFT on the PD path: P queue + P compute of its uncached tokens + transfer of the tokens
        ``d`` lacks (decode radix cache) + one decode iteration on ``d`` to admit it."""
        prompt_len = v.req.prompt_len
        return (
            self.p_queue_ms(p, p.worker_id in v.fresh, prompt_len)
            + self.p_prefill_ms(v, p)
            + self.transfer_ms(prompt_len - v.hits.get(d.worker_id, 0), v.link)
            + self.decode_step_ms(d, d.worker_id in v.fresh, prompt_len)
        )

    def local_backlog_ms(
        self, d: WorkerSnapshot, chunk_len: int, decode_extra_ms: float, new_len: int
    ) -> float:
        """Local/deflected prefill tokens ahead of a new one of ``new_len`` tokens on ``d``: its
        ``queued_prefill_tokens``, or, where more, the router's own count of local prefills it sent
        there and not yet finished (``num_local_inflight``, exact; telemetry lags a burst of routes),
        each taken to be as long as this one, as every in-flight fallback here is."""
        q = max(d.queued_prefill_tokens or 0, d.num_local_inflight * new_len)
        return self.chunked_ms(q, 0, chunk_len, decode_extra_ms, d.prefill_cost_factor) if q > 0 else 0.0

    def deflected_ttft_ms(
        self, d: WorkerSnapshot, new_len: int, cached_len: int, budget_ms: float
    ) -> tuple[float, int, float]:
        """(TTFT, chunk, stall) of a prefill mixed into fresh ``d``'s decode steps: chunks as large
        as keep each iteration within ``budget_ms`` while attending over the whole prompt (the last
        chunk's worst case), behind ``d``'s current iteration and queued local prefills. ``stall``
        is what each resident decode waits in all, over decode-only steps. An idle ``d`` takes full
        chunks; ``(inf, 0, 0)`` when not even one token fits. Prefill costs at ``d``'s measured
        ``prefill_cost_factor``."""
        factor = d.prefill_cost_factor
        running = d.num_running if d.num_running is not None else d.num_inflight
        if running:
            step = self.decode_step_ms(d, True, cached_len + new_len)
            extra = step - self.dec_base_ms
            chunk = self.max_chunk_len(cached_len + new_len, extra, budget_ms, factor)
            if chunk <= 0:
                return math.inf, 0, 0.0
        else:
            step, extra, chunk = 0.0, 0.0, self.chunk_len
        run = self.chunked_ms(new_len, cached_len, chunk, extra, factor)
        ttft = step + run + self.local_backlog_ms(d, chunk, extra, new_len)
        return ttft, chunk, run - -(-new_len // chunk) * step
