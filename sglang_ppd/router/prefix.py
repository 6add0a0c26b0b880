"""The router's prefix lookup: which prompt prefix each worker holds, for one request at a time.

It owns the block tables shared by the exact indexes (one per KV-event block size) and reads each
worker's index (:mod:`sglang_ppd.router.prefix_index`): exact ones resolve the prompt through the
shared table once per block size, approximate ones hash its pages once per page size (lazily, only
as far as a lookup reads). The approximate indexes learn from the prompts the router sends. The
session attribution of KV events (:mod:`sglang_ppd.router.kv_sessions`) is read here too.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable

from sglang_ppd.core.types import RequestFeatures
from sglang_ppd.protocol import block_hash
from sglang_ppd.router.kv_sessions import KvSessions
from sglang_ppd.router.metrics import Histogram
from sglang_ppd.router.prefix_index import BlockTable
from sglang_ppd.router.workers import WorkerRegistry


class PrefixLookup:
    def __init__(self, registry: WorkerRegistry, timing: Histogram, sessions: KvSessions) -> None:
        self.registry, self.timing, self.sessions = registry, timing, sessions
        self._tables: dict[int, BlockTable] = {}

    def table(self, block_size: int) -> BlockTable:
        """The block table every exact index of this block size shares."""
        return self._tables.setdefault(block_size, BlockTable(block_size))

    def num_table_blocks(self) -> int:
        """Unique blocks in the shared tables: the mirror's memory grows with this, not with time."""
        return sum(len(t) for t in self._tables.values())

    def features(
        self,
        request_id: str,
        input_ids: list[int],
        max_new_tokens: int,
        session_id: str | None,
        turn: int | None,
    ) -> RequestFeatures:
        t0 = time.perf_counter()
        cached: dict[str, int] = {}
        approx: set[str] = set()
        hashes: dict[tuple[str, int], Iterable[int]] = {}
        for w in self.registry.all():
            if w.exact_index is not None:
                key = ("exact", w.exact_index.block_size)
                if key not in hashes:
                    hashes[key] = w.exact_index.table.resolve(input_ids)
                hit = w.exact_index.hit_len(hashes[key])
            elif w.approx_index is not None:
                key = ("approx", w.approx_index.page_size)
                if key not in hashes:
                    hashes[key] = block_hash.LazyPageHashes(input_ids, key[1])
                hit = w.approx_index.hit_len(hashes[key])
                approx.add(w.url)
            else:
                continue
            if hit:
                cached[w.url] = hit
        self.timing.observe(time.perf_counter() - t0)
        return RequestFeatures(
            request_id=request_id,
            prompt_len=len(input_ids),
            max_new_tokens=max_new_tokens,
            cached_len=cached,
            approx_workers=frozenset(approx),
            session_id=session_id,
            turn=turn,
            session_workers=self.sessions.workers(session_id),
        )

    def remember_prompt(self, urls: Collection[str], input_ids: list[int]) -> None:
        """Feed the approximate index of workers without KV events (hashing once per page size)."""
        hashes: dict[int, list[int]] = {}
        for url in urls:
            w = self.registry.get(url)
            if w is not None and w.approx_index is not None:
                size = w.approx_index.page_size
                if size not in hashes:
                    hashes[size] = block_hash.full_page_hashes(input_ids, size)
                w.approx_index.insert(hashes[size])
