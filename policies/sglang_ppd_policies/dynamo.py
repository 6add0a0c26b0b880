"""NVIDIA Dynamo's conditional disaggregation: ``dynamo_isl_bounding`` (Dynamo's default policy),
``dynamo_prefill_load`` and ``dynamo_isl_or_load``.

Source: Dynamo docs, "Conditional Disaggregation"
(https://docs.nvidia.com/dynamo/latest/advanced-customizations/conditional-disaggregation; router
flag ``--router-conditional-disagg-config``). The router picks the decode worker, then keeps the
prefill there ("local prefill+decode") when:

- ``isl_bounding``: effective ISL (prompt minus that decode worker's cached prefix) <
  ``eff_isl_threshold`` (2048) AND effective/raw ISL < ``eff_isl_ratio_threshold`` (0.7);
- ``prefill_load``: the selected prefill worker is above the prefill-busy threshold;
- ``isl_or_load``: either.

The optional decode-busy guard (unset by default in Dynamo, here too) sends the request PD when the
decode worker's projected KV use, with this request, exceeds that fraction of its capacity.

Parameters:
  eff_isl_threshold, eff_isl_ratio_threshold: Dynamo's defaults (2048, 0.7).
  prefill_busy_threshold_tokens: queued prefill tokens on the least-queued P above which P counts as
    busy. Dynamo leaves its threshold unset (then ``prefill_load`` never bypasses); 16384, two full
    chunks of SGLang's default chunked prefill (8192), is this project's choice, not fitted.
  decode_busy_threshold: optional KV-use fraction (None: off, Dynamo's default).
  allow_approx_local, cache_threshold, balance_*: as ``always_local`` / ``pd_cache_aware``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.always_local import LocalParams
from sglang_ppd_policies.static_rule import StaticRulePolicy
from sglang_ppd_policies.threshold import min_prefill_queue
from sglang_ppd_policies.view import View


class DynamoParams(LocalParams):
    eff_isl_threshold: int = Field(2048, ge=0, description="local only if effective ISL < this (Dynamo)")
    eff_isl_ratio_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="local only if effective/raw ISL < this (Dynamo)"
    )
    prefill_busy_threshold_tokens: int = Field(
        16384, ge=0, description="P is busy above this many queued prefill tokens (least-queued P)"
    )
    decode_busy_threshold: float | None = Field(
        None, gt=0.0, le=1.0, description="PD if D's projected KV use exceeds this fraction (None: off)"
    )


class DynamoPolicy(StaticRulePolicy):
    Params = DynamoParams
    use_isl: ClassVar[bool] = True
    use_load: ClassVar[bool] = True

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, DynamoParams)
        self._isl = params.eff_isl_threshold
        self._ratio = params.eff_isl_ratio_threshold
        self._busy = params.prefill_busy_threshold_tokens
        self._kv_frac = params.decode_busy_threshold

    def keep_local(self, v: View, d: WorkerSnapshot, hit_len: int) -> tuple[bool, str]:
        prompt_len = v.req.prompt_len
        eff = prompt_len - hit_len
        isl_ok = self.use_isl and eff < self._isl and eff < self._ratio * prompt_len
        busy = self.use_load and bool(v.ps) and min_prefill_queue(v, prompt_len) > self._busy
        if not (isl_ok or busy):
            return (
                False,
                reasons.ABOVE_THRESHOLD if self.use_isl and not self.use_load else reasons.PREFILL_IDLE,
            )
        if self._kv_frac is not None and not self._kv_below(d, v):
            return False, reasons.DECODE_BUSY
        return True, reasons.BELOW_THRESHOLD if isl_ok else reasons.PREFILL_BUSY

    def _kv_below(self, d: WorkerSnapshot, v: View) -> bool:
        """Dynamo: a decode worker that reports no KV capacity fails the guard."""
        used, cap = d.kv_used_tokens, d.kv_capacity_tokens
        if used is None or cap is None or cap <= 0 or self._kv_frac is None:
            return False
        return used + v.kv_need <= self._kv_frac * cap


class IslBoundingPolicy(DynamoPolicy):
    use_load: ClassVar[bool] = False


class PrefillLoadPolicy(DynamoPolicy):
    use_isl: ClassVar[bool] = False


class IslOrLoadPolicy(DynamoPolicy):
    """Both conditions (the class defaults)."""
