"""llm-d's P/D deciders: ``llmd_non_cached_tokens`` (``prefix-based-pd-decider``) and
``llmd_prompt_tokens`` (``prompt-length-based-pd-decider``).

Source: github.com/llm-d/llm-d-inference-scheduler, ``pkg/plugins/profile/prefix_based_pd_decider.go``
(parameter ``nonCachedTokens``) and the prompt-length decider in ``pkg/plugins/disagg`` (parameter
``promptTokens``). The scheduler picks the decode pod first; the decider then runs a remote prefill
only when the prompt's part not cached on that pod is at least ``nonCachedTokens`` tokens, or when the
whole prompt is at least ``promptTokens``. Otherwise the decode pod runs the prefill itself. In llm-d
both default to 0 (disaggregation off); 512 is the example value of llm-d's guides for
``nonCachedTokens`` and is used for both here.

Parameters:
  non_cached_tokens / prompt_tokens: the threshold, in tokens (512).
  allow_approx_local, cache_threshold, balance_*: as ``always_local`` / ``pd_cache_aware``.
"""

from __future__ import annotations

from pydantic import Field

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import PolicyParams
from sglang_ppd.core.types import WorkerSnapshot
from sglang_ppd_policies import reasons
from sglang_ppd_policies.always_local import LocalParams
from sglang_ppd_policies.static_rule import StaticRulePolicy
from sglang_ppd_policies.view import View


class NonCachedTokensParams(LocalParams):
    non_cached_tokens: int = Field(512, ge=1, description="remote prefill iff uncached tokens >= this")


class PromptTokensParams(LocalParams):
    prompt_tokens: int = Field(512, ge=1, description="remote prefill iff prompt tokens >= this")


class NonCachedTokensPolicy(StaticRulePolicy):
    Params = NonCachedTokensParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, NonCachedTokensParams)
        self._limit = params.non_cached_tokens

    def keep_local(self, v: View, d: WorkerSnapshot, hit_len: int) -> tuple[bool, str]:
        if v.req.prompt_len - hit_len >= self._limit:
            return False, reasons.ABOVE_THRESHOLD
        return True, reasons.BELOW_THRESHOLD


class PromptTokensPolicy(StaticRulePolicy):
    Params = PromptTokensParams

    def __init__(self, params: PolicyParams, profile: CostProfile) -> None:
        super().__init__(params, profile)
        assert isinstance(params, PromptTokensParams)
        self._limit = params.prompt_tokens

    def keep_local(self, v: View, d: WorkerSnapshot, hit_len: int) -> tuple[bool, str]:
        if v.req.prompt_len >= self._limit:
            return False, reasons.ABOVE_THRESHOLD
        return True, reasons.BELOW_THRESHOLD
