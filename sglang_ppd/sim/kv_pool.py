"""A worker's KV token pool: active reservations plus the unreferenced radix cache.

KV is reserved at admission for the whole request and nothing is ever retracted: a reservation
that does not fit, even after evicting every unreferenced chain (LRU), is refused and the request
waits. Only the pinned shared trunk is not evictable; it is counted once.
"""

from __future__ import annotations

from sglang_ppd.sim.prefix_cache import PrefixCache


class KVPool:
    """Token accounting of one worker's KV memory (sizes in tokens)."""

    def __init__(self, capacity: int, *, retain_cache: bool = True) -> None:
        self.capacity = capacity
        self.retain_cache = retain_cache
        self.cache = PrefixCache()
        self.active_tokens = 0
        """Tokens reserved by admitted requests (their cache hits included)."""

    @property
    def used_tokens(self) -> int:
        return self.active_tokens + self.cache.size_tokens

    def reserve(
        self, session_id: str, prompt_len: int, shared_prefix_len: int, total_len: int
    ) -> tuple[int, int] | None:
        """Reserve ``total_len`` tokens for a request, evicting LRU cache; returns (cache hit,
        tokens reserved), or None (nothing changed) if it cannot fit.

        Every chain left in the cache is unreferenced, hence evictable; only the pinned shared
        trunk is not.
        """
        cache = self.cache
        trunk_new = max(shared_prefix_len - cache.shared_len, 0) if self.retain_cache else 0
        shared = min(shared_prefix_len, cache.shared_len + trunk_new) if self.retain_cache else 0
        alloc = total_len - shared
        if self.active_tokens + alloc + cache.shared_len + trunk_new > self.capacity:
            return None
        hit = cache.take(session_id, prompt_len, shared_prefix_len)
        if trunk_new:
            cache.pin_shared(shared_prefix_len)
        over = self.active_tokens + cache.size_tokens + alloc - self.capacity
        if over > 0:
            cache.evict(over)
        self.active_tokens += alloc
        return hit, alloc

    def free(self, alloc_tokens: int, session_id: str, keep_len: int) -> None:
        """Return a reservation; the first ``keep_len`` tokens of the session stay cached."""
        self.active_tokens -= alloc_tokens
        if self.retain_cache:
            self.cache.insert(session_id, keep_len)

    def audit(self, reserved_tokens: int) -> None:
        """Raise if the pool is overcommitted or ``reserved_tokens`` (the sum over admitted
        requests) drifted from the pool's count."""
        used = self.used_tokens
        if used > self.capacity:
            raise AssertionError(f"KV overcommitted: {used} > {self.capacity}")
        if reserved_tokens != self.active_tokens:
            raise AssertionError(f"KV accounting drift: {self.active_tokens} != {reserved_tokens}")
