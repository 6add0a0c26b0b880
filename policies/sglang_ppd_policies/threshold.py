"""``threshold``: a static local-or-PD rule on the uncached length, with a prefill gate and a decode veto.

Sources: llm-d's ``nonCachedTokens`` disaggregation threshold (prefill remotely only when the
uncached part of the prompt is long), the PPD paper's 512-token bypass (arXiv 2603.13358: short
appends skip the P worker) and NVIDIA Dynamo's ``IslOrLoad`` router condition (input length or
prefill load decides). The request goes LOCAL on the local-capable D worker with the longest exact
hit when all of these hold, else PD (as ``pd_cache_aware``):

- uncached length < ``max_uncached_len`` (and uncached/prompt < ``max_uncached_ratio`` if set);
- prefill-busy gate (if ``min_prefill_queue_tokens`` is set): the least-queued P worker has at least
  that many queued prefill tokens (stale telemetry: each P counts in-flight x prompt length);
- decode-busy veto: the D worker has free KV for the request (always), runs fewer than
  ``max_decode_running`` requests (if set) and (``tbt_veto``) the step model says the append's
  first mixed iteration fits the TPOT target.

Parameters:
  max_uncached_len: T, in tokens (512, PPD's bypass length; about where a prefill chunk's compute,
    c_pf*T ~ 8 ms on the default profile, matches the mixing overhead of one decode iteration).
  max_uncached_ratio: R, optional cap on uncached/prompt (None: off).
  min_prefill_queue_tokens: optional prefill-busy gate, in queued tokens (None: off).
  max_decode_running: optional veto on the D worker's running requests (None: off).
  tbt_veto: veto an append whose first mixed iteration would exceed the TPOT target (True: the
    residents' TBT is what a static rule cannot otherwise see). It also vetoes appends over very
    long histories, whose every chunk re-reads the cached prefix (c_ctx: 160 ms at 100k tokens on
    the default profile) and whose PD alternative recomputes that history on P: a real trade-off
    that only a cost-based policy (``ppd``) weighs.
  allow_approx_local, cache_threshold, balance_*: as ``always_local`` / ``pd_cache_aware``.
"""

from __future__ import annotations

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import Route, RouteKind, Slo, WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.always_local import AlwaysLocalPolicy, LocalParams
from sglang_ppd_policies.candidates import local_route
from sglang_ppd_policies.view import View


class ThresholdParams(LocalParams):
    max_uncached_len: int = Field(512, ge=0, description="T: local only if uncached tokens < T")
    max_uncached_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="R: local only if uncached/prompt < R (None: off)"
    )
    min_prefill_queue_tokens: int | None = Field(
        None, ge=0, description="prefill-busy gate: local only if the least-queued P has this many tokens"
    )
    max_decode_running: int | None = Field(
        None, ge=1, description="decode-busy veto: no local on a D running this many requests"
    )
    tbt_veto: bool = Field(
        True, description="no local if the first mixed iteration would exceed the TPOT target"
    )


def min_prefill_queue(v: View, prompt_len: int) -> int:
    """Queued prefill tokens on the least-queued P; in-flight x prompt for all if any is stale."""
    if all(p.queued_prefill_tokens is not None and p.worker_id in v.fresh for p in v.ps):
        return min(p.queued_prefill_tokens or 0 for p in v.ps)
    return min(p.num_inflight for p in v.ps) * prompt_len


class ThresholdPolicy(AlwaysLocalPolicy):
    """``always_local`` with the length rule, the prefill-busy gate and the decode-busy veto."""

    Params = ThresholdParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, ThresholdParams)
        self._max_len = params.max_uncached_len
        self._max_ratio = params.max_uncached_ratio
        self._gate = params.min_prefill_queue_tokens
        self._max_running = params.max_decode_running
        self._tbt_veto = params.tbt_veto

    def decide_resident(self, v: View, d: WorkerSnapshot, hit_len: int) -> Route:
        prompt_len = v.req.prompt_len
        new_len = prompt_len - hit_len
        if new_len >= self._max_len or (
            self._max_ratio is not None and new_len >= self._max_ratio * prompt_len
        ):
            return self.pd(v, reasons.ABOVE_THRESHOLD)
        if self._gate is not None and v.ps and min_prefill_queue(v, prompt_len) < self._gate:
            return self.pd(v, reasons.PREFILL_IDLE)
        if self._decode_busy(d, hit_len, new_len, prompt_len, v.slo):
            return self.pd(v, reasons.DECODE_BUSY)
        return local_route(RouteKind.LOCAL, d, new_len, self.est.chunk_len, reasons.BELOW_THRESHOLD)

    def _decode_busy(self, d: WorkerSnapshot, hit_len: int, new_len: int, prompt_len: int, slo: Slo) -> bool:
        running = d.num_running if d.num_running is not None else d.num_inflight
        if self._max_running is not None and running >= self._max_running:
            return True
        if not self._tbt_veto or running == 0:
            return False
        est = self.est
        extra = est.decode_step_ms(d, True, prompt_len) - est.dec_base_ms
        first = min(new_len, est.chunk_len)
        return est.chunked_ms(first, hit_len, first, extra) > slo.tpot_ms
