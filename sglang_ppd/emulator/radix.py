"""The emulated radix cache: SGLang's page-hash chain, LRU eviction of unlocked leaves, KV events.

A page is identified by its chained block hash (the int64 SGLang publishes), so a hash names a whole
prefix and the tree is a dict of pages with parent links. Only full pages are cached, as in SGLang.
Mutations return the KV events they cause (SGLang's ``BlockStored`` per page, ``BlockRemoved`` per
eviction batch) for the publisher, in order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sglang_ppd.protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent


@dataclass(slots=True)
class _Page:
    parent: int | None
    num_children: int = 0
    lock_ref: int = 0


@dataclass(slots=True)
class RadixCache:
    page_size: int
    _pages: dict[int, _Page] = field(default_factory=dict)
    # Unlocked leaves, least recently used first: the eviction candidates.
    _evictable: OrderedDict[int, None] = field(default_factory=OrderedDict)
    _num_locked: int = 0

    @property
    def cached_tokens(self) -> int:
        return len(self._pages) * self.page_size

    @property
    def unlocked_tokens(self) -> int:
        """Cached tokens no running request holds: what eviction can free."""
        return (len(self._pages) - self._num_locked) * self.page_size

    def match(self, hashes: Sequence[int]) -> int:
        """Leading pages of ``hashes`` that are resident, as a token count; touches them for LRU."""
        n = 0
        for h in hashes:
            if h not in self._pages:
                break
            if h in self._evictable:
                self._evictable.move_to_end(h)
            n += 1
        return n * self.page_size

    def lock(self, hashes: Sequence[int]) -> None:
        for h in hashes:
            page = self._pages[h]
            page.lock_ref += 1
            if page.lock_ref == 1:
                self._num_locked += 1
                self._evictable.pop(h, None)

    def unlock(self, hashes: Sequence[int]) -> None:
        for h in hashes:
            page = self._pages.get(h)
            if page is None:
                continue
            page.lock_ref -= 1
            if page.lock_ref == 0:
                self._num_locked -= 1
                if page.num_children == 0:
                    self._evictable[h] = None

    def insert(self, token_ids: Sequence[int], hashes: Sequence[int], budget_tokens: int) -> list[KVEvent]:
        """Cache the full pages of ``token_ids`` (``hashes`` is their chain), evicting LRU pages so the
        unlocked cache fits ``budget_tokens`` (the KV pool minus what running requests hold)."""
        ps = self.page_size
        num_new = sum(1 for h in hashes if h not in self._pages)
        events: list[KVEvent] = self.evict(self.unlocked_tokens + num_new * ps - budget_tokens)
        parent: int | None = None
        for i, h in enumerate(hashes):
            page = self._pages.get(h)
            if page is None:
                if parent is not None and parent not in self._pages:
                    break  # the chain above was evicted to make room: cache only what is anchored
                self._pages[h] = _Page(parent)
                if parent is not None:
                    self._pages[parent].num_children += 1
                    self._evictable.pop(parent, None)
                self._evictable[h] = None
                events.append(
                    BlockStored(
                        block_hashes=[h],
                        parent_block_hash=parent,
                        token_ids=list(token_ids[i * ps : (i + 1) * ps]),
                        block_size=ps,
                        lora_id=None,
                        medium="GPU",
                    )
                )
            elif h in self._evictable:
                self._evictable.move_to_end(h)
            parent = h
        return events

    def evict(self, num_tokens: int) -> list[KVEvent]:
        removed: list[int] = []
        while num_tokens > 0 and self._evictable:
            h, _ = self._evictable.popitem(last=False)
            page = self._pages.pop(h)
            removed.append(h)
            num_tokens -= self.page_size
            if page.parent is not None:
                up = self._pages[page.parent]
                up.num_children -= 1
                if up.num_children == 0 and up.lock_ref == 0:
                    # A parent is never more recently used than its child: it goes next.
                    self._evictable[page.parent] = None
                    self._evictable.move_to_end(page.parent, last=False)
        return [BlockRemoved(block_hashes=removed, medium="GPU")] if removed else []

    def clear(self) -> list[KVEvent]:
        """Drop every page (``/flush_cache``); like SGLang, the caller refuses while requests run."""
        self._pages.clear()
        self._evictable.clear()
        self._num_locked = 0
        return [AllBlocksCleared()]
