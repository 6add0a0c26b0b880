"""A request's page-hash chain (SGLang block hashes), computed once and extended for its output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sglang_ppd.protocol.block_hash import digest_to_int64, page_digests


@dataclass(frozen=True, slots=True)
class PageChain:
    page_size: int
    digests: tuple[bytes, ...]
    """Digests of the whole pages of the tokens the chain was built from."""

    @classmethod
    def of(cls, token_ids: Sequence[int], page_size: int) -> PageChain:
        whole = len(token_ids) - len(token_ids) % page_size
        return cls(page_size, tuple(page_digests(token_ids[:whole], page_size)))

    @property
    def hashes(self) -> list[int]:
        return [digest_to_int64(d) for d in self.digests]

    def extend(self, token_ids: Sequence[int]) -> PageChain:
        """The chain of ``token_ids``, whose leading whole pages are this chain's tokens."""
        start = len(self.digests) * self.page_size
        whole = len(token_ids) - len(token_ids) % self.page_size
        if whole <= start:
            return self
        prior = self.digests[-1] if self.digests else None
        more = page_digests(token_ids[start:whole], self.page_size, prior)
        return PageChain(self.page_size, self.digests + tuple(more))
