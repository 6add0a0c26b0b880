"""Which prompt prefix each worker holds: exact (from KV events) or approximate (from routing history).

Exact: SGLang's block hashes chain over the whole prefix, so a worker holds the first ``n`` pages of
a prompt iff it holds the hash of page ``n``'s chain, and a radix tree never keeps a child without
its parent. Each worker's index is a set of block hashes per DP rank; the hit length is the number
of leading page hashes found, times the page size. A ``BlockRemoved`` drops hashes (eviction), an
``AllBlocksCleared`` or a resync clears the rank. Under-counting is the failure mode we accept (the
policy then routes PD); over-counting is avoided by clearing on any doubt.

The prompt's page hashes come from a :class:`BlockTable` shared by all workers of one block size:
``(parent hash, page tokens) -> block hash``, learned from the ``BlockStored`` events themselves
(they carry the page's token ids). Walking the prompt through it costs one dict lookup per page
instead of one SHA-256 (:mod:`sglang_ppd.protocol.block_hash`), and it stops exactly where no
worker holds the next page, so nothing past the longest possible hit is ever computed.

The table is shared, so no worker may teach it a false chain: every ``BlockStored`` page is checked
against SGLang's hash chain computed from its own tokens and its parent's digest
(:func:`~sglang_ppd.protocol.block_hash.page_digests`); a page whose claimed hash does not match, or
whose parent is unknown (unreachable from a prompt's first page anyway), is rejected with the rest
of its event and counted. The table keeps each block's full digest to continue chains from it.

Approximate (workers without KV events): the prompts the router sent there recently, as coarse
page hashes in an LRU. Hits from it are marked approximate (``RequestFeatures.approx_workers``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from sglang_ppd.protocol.block_hash import digest_to_int64, page_digests
from sglang_ppd.protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

PageKey = int | tuple[int, ...]
"""A page's tokens: the token itself at page size 1 (no tuple per token), else the tuple."""


class _Block:
    """One block the table knows: where it hangs (its ``_children`` key, shared, not copied), how many
    worker ranks hold it, and its full digest."""

    __slots__ = ("where", "refs", "digest")

    def __init__(self, where: tuple[int | None, PageKey], digest: bytes) -> None:
        self.where, self.refs, self.digest = where, 1, digest


class BlockTable:
    """Block-hash chains known from KV events, reference-counted over every worker rank holding them.

    Two dicts for the whole table, whatever its size: with SGLang's page size 1 a chain has one
    block per token, so a per-block cost matters (a 100k-token cache per worker is 100k blocks each);
    a dict per parent, or one dict per per-block attribute, would cost several times the memory
    (``benchmarks/prefix_memory.py``)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._children: dict[tuple[int | None, PageKey], int] = {}
        self._blocks: dict[int, _Block] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def child(self, parent: int | None, key: PageKey) -> int | None:
        """The block stored under ``parent`` for this page's tokens, if any."""
        return self._children.get((parent, key))

    def digest(self, block: int) -> bytes | None:
        """The full SHA-256 digest of a block some worker holds (a chain continues from it)."""
        entry = self._blocks.get(block)
        return None if entry is None else entry.digest

    def add(self, parent: int | None, key: PageKey, block: int, digest: bytes) -> None:
        entry = self._blocks.get(block)
        if entry is not None:
            entry.refs += 1
            return
        where = (parent, key)
        self._blocks[block] = _Block(where, digest)
        self._children[where] = block

    def drop(self, block: int) -> None:
        entry = self._blocks.get(block)
        if entry is None:
            return
        if entry.refs > 1:
            entry.refs -= 1
            return
        del self._blocks[block]
        if self._children.get(entry.where) == block:
            del self._children[entry.where]

    def resolve(self, token_ids: Sequence[int]) -> list[int]:
        """The prompt's leading page hashes, as far as any worker holds them."""
        out: list[int] = []
        children, parent, size = self._children, None, self.block_size
        for start in range(0, len(token_ids) - size + 1, size):
            key = token_ids[start] if size == 1 else tuple(token_ids[start : start + size])
            block = children.get((parent, key))
            if block is None:
                break
            out.append(block)
            parent = block
        return out


class ExactPrefixIndex:
    def __init__(self, table: BlockTable, num_ranks: int = 1, max_blocks: int = 8_000_000) -> None:
        self.table = table
        self.block_size = table.block_size
        self.max_blocks = max_blocks
        self._ranks: list[set[int]] = [set() for _ in range(max(num_ranks, 1))]
        self.num_resyncs = 0
        self.num_rejected = 0
        """Stored blocks refused because their hash does not match their tokens' chain."""

    def apply(self, rank: int, events: Sequence[KVEvent]) -> int:
        """Apply one batch to a rank; returns how many stored blocks were rejected."""
        blocks, table = self._ranks[rank], self.table
        rejected = 0
        for ev in events:
            if isinstance(ev, BlockStored):
                rejected += self._store(blocks, ev)
            elif isinstance(ev, BlockRemoved):
                for block in ev.block_hashes:
                    if block in blocks:
                        blocks.remove(block)
                        table.drop(block)
            elif isinstance(ev, AllBlocksCleared):
                self._clear_rank(rank)
        if len(blocks) > self.max_blocks:
            self.clear(rank)
        self.num_rejected += rejected
        return rejected

    def _store(self, blocks: set[int], ev: BlockStored) -> int:
        """Index the event's whole pages whose hashes match the chain; the number rejected. A page
        the table already holds under the same parent was checked when it was first stored: only
        new pages cost a SHA-256 (a prefix many workers share is hashed once)."""
        table, size = self.table, self.block_size
        parent, tokens, hashes = ev.parent_block_hash, ev.token_ids, ev.block_hashes
        prior = None if parent is None else table.digest(parent)
        if parent is not None and prior is None:
            return len(hashes)
        for i in range(min(len(hashes), len(tokens) // size)):
            block, page = hashes[i], tokens[i * size : (i + 1) * size]
            key = page[0] if size == 1 else tuple(page)
            digest = table.digest(block) if table.child(parent, key) == block else None
            if digest is None:
                try:
                    digest = page_digests(page, size, prior)[0]
                except (ValueError, TypeError):  # token ids that are not uint32
                    return len(hashes) - i
                if digest_to_int64(digest) != block:
                    return len(hashes) - i
            if block not in blocks:
                blocks.add(block)
                table.add(parent, key, block, digest)
            parent, prior = block, digest
        return 0

    def _clear_rank(self, rank: int) -> None:
        blocks = self._ranks[rank]
        for block in blocks:
            self.table.drop(block)
        blocks.clear()

    def clear(self, rank: int | None = None) -> None:
        """Forget a rank's (or every rank's) blocks: after lost events, nothing may be over-counted."""
        self.num_resyncs += 1
        for r in range(len(self._ranks)):
            if rank is None or r == rank:
                self._clear_rank(r)

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
