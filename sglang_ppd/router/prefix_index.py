"""Which prompt prefix each worker holds: exact (from KV events) or approximate (from routing history).

Exact: SGLang's block hashes chain over the whole prefix, so a worker holds the first ``n`` pages of
a prompt iff it holds the hash of page ``n``'s chain, and a radix tree never keeps a child without
its parent. The index is therefore a set of block hashes per DP rank; the hit length is the number
of leading page hashes found, times the page size. A ``BlockRemoved`` drops hashes (eviction), an
``AllBlocksCleared`` or a resync clears the rank. Under-counting is the failure mode we accept (the
policy then routes PD); over-counting is avoided by clearing on any doubt.

Approximate (workers without KV events): the prompts the router sent there recently, as coarse
page hashes in an LRU. Hits from it are marked approximate (``RequestFeatures.approx_workers``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from sglang_ppd.protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent


class ExactPrefixIndex:
    def __init__(self, block_size: int, num_ranks: int = 1, max_blocks: int = 8_000_000) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks
        self._ranks: list[set[int]] = [set() for _ in range(max(num_ranks, 1))]
        self.num_resyncs = 0

    def apply(self, rank: int, events: Sequence[KVEvent]) -> None:
        blocks = self._ranks[rank]
        for ev in events:
            if isinstance(ev, BlockStored):
                blocks.update(ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                blocks.difference_update(ev.block_hashes)
            elif isinstance(ev, AllBlocksCleared):
                blocks.clear()
        if len(blocks) > self.max_blocks:
            self.clear(rank)

    def clear(self, rank: int | None = None) -> None:
        """Forget a rank's (or every rank's) blocks: after lost events, nothing may be over-counted."""
        self.num_resyncs += 1
        for r, blocks in enumerate(self._ranks):
            if rank is None or r == rank:
                blocks.clear()

    def num_blocks(self) -> int:
        return sum(len(b) for b in self._ranks)

    def hit_len(self, page_hashes: Iterable[int]) -> int:
        best = 0
        for blocks in self._ranks:
            n = 0
            for h in page_hashes:
                if h not in blocks:
                    break
                n += 1
            best = max(best, n)
        return best * self.block_size


class ApproxPrefixIndex:
    def __init__(self, page_size: int, max_pages: int) -> None:
        self.page_size = page_size
        self.max_pages = max_pages
        self._pages: OrderedDict[int, None] = OrderedDict()

    def insert(self, page_hashes: Sequence[int]) -> None:
        pages = self._pages
        for h in page_hashes:
            pages[h] = None
            pages.move_to_end(h)
        while len(pages) > self.max_pages:
            pages.popitem(last=False)

    def hit_len(self, page_hashes: Iterable[int]) -> int:
        n = 0
        for h in page_hashes:
            if h not in self._pages:
                break
            n += 1
        return n * self.page_size

    def clear(self) -> None:
        self._pages.clear()

    def num_blocks(self) -> int:
        return len(self._pages)
