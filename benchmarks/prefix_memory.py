"""Memory and time per block of the router's KV mirror: the shared ``BlockTable`` and one
``ExactPrefixIndex`` per worker (``sglang_ppd/router/prefix_index.py``), at steady state.

    python benchmarks/prefix_memory.py [--page-sizes 1,16] [--num-workers 3] [--capacity-tokens 100000]
                                       [--churn 3] [--seed 0] [--out FILE]

Workload: the soak's multi-turn sessions (``benchmarks/soak.py``: a first prompt of 500-2000 tokens,
then 50-200 user and 16-64 output tokens a turn, 4 turns), each turn sent to a random worker. A
worker's cache is an LRU of session chains of at most ``--capacity-tokens``: a turn stores only what
that worker does not hold of its session yet (parent = its held chain's last block), and a session
evicted there is one ``BlockRemoved``. Events go through the wire codec (``encode_batch`` then
``decode_batch``), so the index keeps the same objects the router's KV feed gives it. The run fills
every cache, then stores ``--churn`` times the total capacity more.

Measured, per page size: traced memory (``tracemalloc``) of the mirror at the end, per unique block
of the shared table and per block held by a worker; with tracemalloc off (a second, identical run),
``apply`` time per stored block (SHA-256 checks included) and ``resolve`` time per page (held
sessions' prompts, the best of 5 passes); times on a shared machine are noisy (the load average
is written too). Writes ``benchmarks/results/prefix_memory.json`` (or
``--out``) with machine, date, seed and the source the mirror was imported from (run it with
``PYTHONPATH=DIR`` to measure another checkout).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sglang_ppd
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.protocol import kv_events
from sglang_ppd.protocol.block_hash import digest_to_int64, page_digests
from sglang_ppd.router.prefix_index import BlockTable, ExactPrefixIndex

RESULT = Path(__file__).parent / "results" / "prefix_memory.json"
VOCAB = 128_000
TURNS = 4
NUM_LIVE_SESSIONS = 64
NUM_RESOLVED = 200
RESOLVE_PASSES = 5


@dataclass
class Session:
    tokens: list[int]
    hashes: list[int] = field(default_factory=list)
    """Whole-page block hashes of ``tokens`` so far."""
    last_digest: bytes | None = None
    turn: int = 0

    def extend(self, page: int) -> None:
        done, whole = len(self.hashes), len(self.tokens) // page
        digests = page_digests(self.tokens[done * page : whole * page], page, self.last_digest)
        self.hashes += [digest_to_int64(d) for d in digests]
        if digests:
            self.last_digest = digests[-1]


class WorkerCache:
    """One worker's cache as LRU session chains: session -> number of whole pages held."""

    def __init__(self, capacity_pages: int, sessions: dict[int, Session]) -> None:
        self.capacity_pages, self.sessions = capacity_pages, sessions
        self.held: OrderedDict[int, int] = OrderedDict()
        self.num_pages = 0

    def store(self, sid: int, page: int) -> list[kv_events.KVEvent]:
        s = self.sessions[sid]
        held = self.held.pop(sid, 0)
        self.held[sid] = len(s.hashes)
        self.num_pages += len(s.hashes) - held
        events: list[kv_events.KVEvent] = []
        if len(s.hashes) > held:
            parent = s.hashes[held - 1] if held else None
            tokens = s.tokens[held * page : len(s.hashes) * page]
            events.append(kv_events.BlockStored(s.hashes[held:], parent, tokens, page, None))
        while self.num_pages > self.capacity_pages:
            old, n = self.held.popitem(last=False)
            self.num_pages -= n
            events.append(kv_events.BlockRemoved(self.sessions[old].hashes[:n]))
        return events


@dataclass
class Workload:
    stream: list[tuple[int, bytes]]
    """(worker, one encoded KV-event batch): decoded during the run, as the router's feed does."""
    num_stored_blocks: int
    held_prompts: list[list[int]]
    """Prompts some worker holds whole at the end (for timing ``resolve``)."""


def build(args: argparse.Namespace, page: int) -> Workload:
    rng = random.Random(args.seed)
    sessions: dict[int, Session] = {}
    caches = [WorkerCache(args.capacity_tokens // page, sessions) for _ in range(args.num_workers)]
    target_blocks = args.capacity_tokens // page * args.num_workers * (1 + args.churn)
    stream: list[tuple[int, bytes]] = []
    stored, live = 0, list[int]()
    while stored < target_blocks:
        while len(live) < NUM_LIVE_SESSIONS:
            live.append(len(sessions))
            sessions[len(sessions)] = Session([rng.randrange(VOCAB) for _ in range(rng.randint(500, 2000))])
        sid = rng.choice(live)
        s = sessions[sid]
        if s.turn:  # the previous reply, then this turn's user message
            s.tokens += [rng.randrange(VOCAB) for _ in range(rng.randint(16, 64) + rng.randint(50, 200))]
        s.extend(page)
        s.turn += 1
        if s.turn == TURNS:
            live.remove(sid)
        w = rng.randrange(args.num_workers)
        events = caches[w].store(sid, page)
        stored += sum(len(e.block_hashes) for e in events if isinstance(e, kv_events.BlockStored))
        batch = kv_events.KVEventBatch(ts=0.0, events=events, attn_dp_rank=0)
        stream.append((w, kv_events.encode_batch(batch)))
    held = [sid for c in caches for sid, n in c.held.items() if n == len(sessions[sid].hashes)]
    prompts = [sessions[sid].tokens[: len(sessions[sid].hashes) * page] for sid in held[-NUM_RESOLVED:]]
    return Workload(stream, stored, prompts)


def run(work: Workload, page: int, num_workers: int, traced: bool) -> dict[str, Any]:
    gc.collect()
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else 0
    table = BlockTable(page)
    indexes = [ExactPrefixIndex(table) for _ in range(num_workers)]
    apply_ns = 0
    for w, payload in work.stream:
        events = kv_events.decode_batch(payload).events
        t0 = time.perf_counter_ns()
        rejected = indexes[w].apply(0, events)
        apply_ns += time.perf_counter_ns() - t0
        if rejected:
            raise RuntimeError(f"{rejected} blocks rejected: the workload's chains are wrong")
    del events
    gc.collect()
    out: dict[str, Any] = {
        "num_table_blocks": len(table),
        "num_worker_blocks": sum(i.num_blocks() for i in indexes),
    }
    if traced:
        mem = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out["traced_bytes"] = mem
        out["bytes_per_table_block"] = round(mem / len(table), 1)
        out["bytes_per_worker_block"] = round(mem / out["num_worker_blocks"], 1)
        return out
    num_pages = sum(len(p) // page for p in work.held_prompts)
    passes_ns = []
    for _ in range(RESOLVE_PASSES):
        t0 = time.perf_counter_ns()
        resolved = sum(len(table.resolve(prompt)) for prompt in work.held_prompts)
        passes_ns.append(time.perf_counter_ns() - t0)
        if resolved != num_pages:
            raise RuntimeError("a held prompt did not resolve whole")
    resolve_ns = min(passes_ns)
    out["apply_ns_per_stored_block"] = round(apply_ns / work.num_stored_blocks, 1)
    out["resolve_ns_per_page"] = round(resolve_ns / num_pages, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--page-sizes", default="1,16")
    p.add_argument("--num-workers", type=int, default=3)
    p.add_argument("--capacity-tokens", type=int, default=100_000, help="per worker")
    p.add_argument("--churn", type=float, default=3.0, help="stored past the fill, in total capacities")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    rows = []
    load_before = os.getloadavg()
    for page in (int(x) for x in args.page_sizes.split(",")):
        work = build(args, page)
        row = {"page_size": page, "num_stored_blocks": work.num_stored_blocks}
        row |= run(work, page, args.num_workers, traced=False)
        row |= run(work, page, args.num_workers, traced=True)
        print(row, flush=True)
        rows.append(row)
    summary = {
        "benchmark": "prefix mirror: memory and time per block at steady state",
        "command": "python benchmarks/prefix_memory.py " + " ".join(sys.argv[1:]),
        "source": str(Path(sglang_ppd.__file__).resolve().parent),
        "seed": args.seed,
        "num_workers": args.num_workers,
        "capacity_tokens_per_worker": args.capacity_tokens,
        "churn": args.churn,
        "rows": rows,
        "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
        "machine": machine_info(),
    }
    write_result_json(args.out, summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
