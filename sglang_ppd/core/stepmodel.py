"""The step model's coefficients as plain floats, and the decode-side estimates every decision
needs: one decode step on a worker, and the chunk that keeps a mixed step within a TBT budget.

Built once per policy (and once per host for the guard) from a :class:`CostProfile`: pydantic
attribute access is too slow for a decision's hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ppd.core.chunk import fit_len
from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.types import Slo, WorkerSnapshot


@dataclass(frozen=True, slots=True)
class StepModel:
    pf_base_ms: float
    dec_base_ms: float
    c_pf_ms: float
    c_attn_ms: float
    c_ctx_ms: float
    c_batch_ms: float
    c_kv_ms: float
    chunk_len: int
    """The profile's ``chunked_prefill_size``: the largest chunk."""

    @classmethod
    def of(cls, profile: CostProfile) -> StepModel:
        s = profile.step
        return cls(s.prefill_base_ms, s.decode_base_ms, s.c_pf_ms, s.c_attn_ms, s.c_ctx_ms,
                   s.c_batch_ms, s.c_kv_ms, profile.chunked_prefill_size)  # fmt: skip

    @staticmethod
    def residents(d: WorkerSnapshot, fresh: bool) -> int:
        """Requests sharing ``d``'s decode steps now or soon: the host's exact in-flight count (its
        PD requests whose KV is still on the way included), or the (reconciled) telemetry count
        when fresh and larger (other routers' requests)."""
        n = d.num_running if fresh else None
        return d.num_inflight if n is None or n < d.num_inflight else n

    def decode_step_ms(self, d: WorkerSnapshot, fresh: bool, prompt_len: int) -> float:
        """One decode-only iteration on ``d``: its reported EWMA when fresh and busy, else the step
        model (an idle worker's EWMA is a leftover from its last busy period). Stale: the router's
        in-flight count as the batch, each as long as this prompt."""
        n = d.num_running
        if fresh and n is not None:
            if n == 0:
                return self.dec_base_ms
            if d.decode_iter_ms is not None:
                return d.decode_iter_ms
            ctx = d.running_context_tokens
            if ctx is None:
                ctx = n * prompt_len
        else:
            n = d.num_inflight
            ctx = n * prompt_len
        return self.batch_step_ms(n, ctx)

    def batch_step_ms(self, num_decodes: int, context_tokens: int) -> float:
        """A decode-only iteration of ``num_decodes`` requests over ``context_tokens`` in all."""
        return self.dec_base_ms + self.c_batch_ms * num_decodes + self.c_kv_ms * context_tokens

    def decode_step_with_ms(self, d: WorkerSnapshot, fresh: bool, prompt_len: int) -> float:
        """The model's decode-only iteration on ``d`` once a request of ``prompt_len`` tokens joins
        its batch: its running requests and their context when fresh, else the router's in-flight
        count, each as long as this prompt (as :meth:`decode_step_ms`; never the reported EWMA,
        which cannot say what one more request adds)."""
        n, ctx = d.num_running, d.running_context_tokens
        if not fresh or n is None or ctx is None:
            n, ctx = d.num_inflight, d.num_inflight * prompt_len
        return self.batch_step_ms(n + 1, ctx + prompt_len)

    def max_chunk_len(
        self, context_len: int, decode_extra_ms: float, budget_ms: float, factor: float = 1.0
    ) -> int:
        """Largest chunk whose iteration (with ``decode_extra_ms`` of resident decodes beyond the
        decode base) stays within ``budget_ms`` over ``context_len`` cached tokens; 0 if none fits.
        ``factor`` scales the prefill part (a worker's measured ``prefill_cost_factor``)."""
        slack = (budget_ms - decode_extra_ms) / factor - self.pf_base_ms
        return min(fit_len(self.c_pf_ms, self.c_attn_ms, self.c_ctx_ms, slack, context_len), self.chunk_len)

    def chunked_ms(
        self, new_len: int, cached_len: int, chunk_len: int, decode_extra_ms: float, factor: float = 1.0
    ) -> float:
        """``new_len`` tokens over ``cached_len`` in chunks of ``chunk_len``, each iteration also
        carrying ``decode_extra_ms`` of decodes; the prefill part scaled by ``factor``. Closed form
        of summing ``iteration_ms`` per chunk: the attention term sums to c_attn*(new*cached +
        new^2/2) for any split."""
        if new_len <= 0:
            return 0.0
        n = -(-new_len // chunk_len)
        done_sum = chunk_len * n * (n - 1) // 2
        prefill = (
            n * self.pf_base_ms
            + new_len * self.c_pf_ms
            + self.c_attn_ms * (new_len * cached_len + new_len * new_len / 2)
            + self.c_ctx_ms * (n * cached_len + done_sum)
        )
        return n * decode_extra_ms + factor * prefill

    def queue_ms(self, queued_len: int, prompt_len: int, factor: float = 1.0) -> float:
        """Prefill of ``queued_len`` queued tokens at full chunks, ahead of a ``prompt_len`` prompt.
        The queued requests' own lengths are unknown: each is taken to be as long as this one, so
        a queued token attends over prompt_len/2 on average (0 would badly underestimate
        long-context queues: at 10k-token prompts attention is as costly as the linear term)."""
        if queued_len <= 0:
            return 0.0
        per_token = self.c_pf_ms + self.c_attn_ms * prompt_len / 2
        return factor * (-(-queued_len // self.chunk_len) * self.pf_base_ms + queued_len * per_token)


def tbt_budget_ms(d: WorkerSnapshot, slo: Slo) -> float:
    """The step ``d`` may take while decodes are resident: the TPOT SLO, or the worker's own TBT
    budget where that is tighter."""
    own = d.tbt_budget_ms
    return slo.tpot_ms if own is None or own > slo.tpot_ms else own
