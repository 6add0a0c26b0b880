"""How much local prefill one scheduler iteration may run: a token budget and a TBT time budget.

Decode workers mix local-prefill chunks into decode steps (``mix_with_running``). While decodes
are resident, chunks are sized so that the mixed iteration stays within ``tbt_budget_ms``, but at
least ``min_chunk_len`` tokens run (so a local prefill always progresses). A route's chunk plan
caps the chunk (the ``ppd_chunk_len`` the real worker gets); a cap below ``min_chunk_len`` is
raised to it, so a plan made for a tiny append does not crawl when eviction made the uncached
part longer by the time the request is admitted. The fit is ``core.chunk.fit_len``, the rule the
policies' estimator and the guard use.
"""

from __future__ import annotations

import math

from sglang_ppd.core.chunk import fit_len
from sglang_ppd.core.costmodel import CostProfile


class ChunkBudget:
    """One iteration's remaining prefill budget; :meth:`take` sizes and charges the next chunk."""

    def __init__(
        self,
        profile: CostProfile,
        tokens: int,
        min_chunk_len: int,
        tbt_budget_ms: float | None = None,
        num_decodes: int = 0,
        context_tokens: int = 0,
    ) -> None:
        self.profile = profile
        self.tokens = tokens
        self.min_chunk_len = min_chunk_len
        self.ms_left = math.inf
        """Time left for chunks under the TBT budget; unbounded without resident decodes."""
        if num_decodes and tbt_budget_ms is not None:
            self.ms_left = tbt_budget_ms - profile.iteration_ms((), num_decodes, context_tokens)
            self.ms_left -= profile.step.prefill_base_ms - profile.step.decode_base_ms

    @property
    def time_spent(self) -> bool:
        return self.ms_left <= 0

    def take(self, remaining: int, done_len: int, chunk_cap: int | None, first: bool) -> int:
        """Tokens of the next chunk of a prefill with ``remaining`` tokens over ``done_len``
        computed ones, charged to the budget; 0 or less (nothing charged) ends the iteration's
        chunks. The iteration's ``first`` chunk runs at least ``min_chunk_len`` tokens."""
        plan = max(chunk_cap, self.min_chunk_len) if chunk_cap else self.tokens
        n = min(remaining, self.tokens, plan)
        if self.ms_left != math.inf:
            s = self.profile.step
            fit = fit_len(s.c_pf_ms, s.c_attn_ms, s.c_ctx_ms, self.ms_left, done_len)
            n = min(n, fit if not first or fit >= self.min_chunk_len else self.min_chunk_len)
        if n <= 0:
            return n
        self.tokens -= n
        if self.ms_left != math.inf:
            self.ms_left -= self.profile.prefill_chunk_ms(n, done_len)
        return n
