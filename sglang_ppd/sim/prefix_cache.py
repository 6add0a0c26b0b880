"""A worker's radix prefix cache, reduced to what the workload contract can express.

Token identity is per session (``TurnSpec``): every prompt of a session is a prefix of one token
stream, and every session of a workload starts with the same ``shared_prefix_len`` system tokens.
A radix tree over such prompts is a shared-prefix trunk with one chain per session, so one entry per
session holding its cached length is exact: the hit of a prompt is ``min(cached_len, prompt_len)``,
or the shared trunk when the session has nothing cached.

Only *unreferenced* KV lives here. A request that is admitted takes its session's entry out (those
tokens become part of its active allocation) and puts a longer one back when it ends, so running
requests are never evicted, as SGLang's lock_ref guarantees. Eviction is LRU and, like the radix
tree's leaf-first eviction, trims the tail of the least recently used chain. The shared trunk is
pinned once resident (a radix tree cannot evict an inner node while chains hang below it); it is
counted once.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    """Session chains with LRU tail eviction. Sizes are in tokens and exclude the shared trunk."""

    def __init__(self) -> None:
        self._chains: OrderedDict[str, int] = OrderedDict()
        """session -> cached stream length (shared trunk included in the length, not the size)."""
        self.shared_len = 0
        """Resident length of the pinned shared trunk."""
        self.chain_tokens = 0
        """Evictable tokens held by chains (their lengths minus the shared trunk)."""

    @property
    def size_tokens(self) -> int:
        return self.chain_tokens + self.shared_len

    def hit_len(self, session_id: str, prompt_len: int, shared_prefix_len: int) -> int:
        """Leading prompt tokens resident here (a radix match), without touching LRU order."""
        chain = self._chains.get(session_id, 0)
        return min(prompt_len, max(chain, min(self.shared_len, shared_prefix_len)))

    def _chain_size(self, length: int) -> int:
        return max(length - self.shared_len, 0)

    def take(self, session_id: str, prompt_len: int, shared_prefix_len: int) -> int:
        """Remove the session's chain for a request being admitted; returns the prompt's hit length.

        The hit tokens become the request's own. Cached tokens beyond the prompt (a rare branch)
        are dropped with the chain.
        """
        hit = self.hit_len(session_id, prompt_len, shared_prefix_len)
        chain = self._chains.pop(session_id, None)
        if chain is not None:
            self.chain_tokens -= self._chain_size(chain)
        return hit

    def pin_shared(self, shared_prefix_len: int) -> int:
        """Make the shared trunk resident up to ``shared_prefix_len``; returns the tokens added."""
        added = max(shared_prefix_len - self.shared_len, 0)
        if added:
            # Chains already counted those trunk tokens in their size; move them to the trunk.
            old = {s: self._chain_size(n) for s, n in self._chains.items()}
            self.shared_len += added
            self.chain_tokens += sum(self._chain_size(n) - old[s] for s, n in self._chains.items())
        return added

    def insert(self, session_id: str, length: int) -> None:
        """Return a finished request's stream (``length`` tokens) to the cache as most recent."""
        prev = self._chains.pop(session_id, None)
        if prev is not None:
            self.chain_tokens -= self._chain_size(prev)
            length = max(length, prev)
        self._chains[session_id] = length
        self.chain_tokens += self._chain_size(length)

    def discard(self, session_id: str) -> None:
        """Forget a session's chain (a driver's per-request hit carrier whose request was cancelled)."""
        chain = self._chains.pop(session_id, None)
        if chain is not None:
            self.chain_tokens -= self._chain_size(chain)

    def evict(self, num_tokens: int) -> int:
        """Free at least ``num_tokens`` by trimming LRU chain tails; returns the tokens freed."""
        freed = 0
        while freed < num_tokens and self._chains:
            session_id, length = next(iter(self._chains.items()))
            size = self._chain_size(length)
            cut = min(size, num_tokens - freed)
            freed += cut
            self.chain_tokens -= cut
            if cut == size:
                del self._chains[session_id]
            else:
                self._chains[session_id] = length - cut
        return freed
