"""What the extension reads off SGLang's batches and queues: the iteration log rows and telemetry.

Plain attribute reads of SGLang objects (``ScheduleBatch``, ``Req``, the decode scheduler's queues),
by names every supported release shares, passed in by :mod:`sglang_ppd.worker.sglang_ext`; nothing
here imports sglang, so it is tested with contract-bound stand-ins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sglang_ppd.worker.admission import LocalQueue
from sglang_ppd.worker.budget import BudgetPolicy, IterationModel


def describe_batch(batch: Any, log: bool) -> tuple[int, int, dict[str, Any] | None]:
    """(new prefill tokens, decoding requests, iteration-log row or ``None`` without a log)."""
    mode = batch.forward_mode
    if mode.is_decode():
        n = len(batch.reqs)
        if not log:
            return 0, n, None
        ctx = sum(r.seqlen for r in batch.reqs)
        return 0, n, {"t": round(time.time(), 4), "kind": "decode", "num_decodes": n, "ctx_tokens": ctx}
    if mode.is_extend():
        # mix_with_running appends the decoding requests after the prefill ones.
        num_dec = len(batch.decoding_reqs or ())
        num_pf = len(batch.reqs) - num_dec
        pf = zip(batch.extend_lens[:num_pf], batch.prefix_lens[:num_pf], strict=True)
        chunks = [[int(n), int(k)] for n, k in pf]
        ctx = int(sum(batch.prefix_lens[num_pf:])) + num_dec
        row = {
            "t": round(time.time(), 4),
            "kind": "mixed" if num_dec else "extend",
            "num_decodes": num_dec,
            "ctx_tokens": ctx,
            "chunks": chunks,
            "rids": [r.rid for r in batch.reqs[:num_pf]],
        }
        return sum(c[0] for c in chunks), num_dec, row
    return 0, 0, {"kind": str(mode)}


def _round2(x: float | None) -> float | None:
    # Fewer spurious "changes" for the publisher to send.
    return None if x is None else round(x, 2)


def telemetry_fields(
    sched: Any,
    queue: LocalQueue[Any],
    model: IterationModel,
    policy: BudgetPolicy,
    plan: Any,
    remaining_prefill_len: Callable[[Any], int],
) -> dict[str, Any]:
    """The :class:`~sglang_ppd.protocol.telemetry.WorkerTelemetry` fields after one scheduling call;
    ``remaining_prefill_len`` is the release's (:mod:`~sglang_ppd.worker.releases`)."""
    running = list(plan.running_batch.reqs)
    batch = plan.batch_to_run
    if batch is not None and batch is not plan.running_batch and batch.decoding_reqs:
        running += batch.decoding_reqs  # a mixed batch holds the decodes this iteration
    prealloc = sched.disagg_decode_prealloc_queue
    capacity = int(sched.max_total_num_tokens)
    free = sched.token_to_kv_pool_allocator.available_size() + sched.tree_cache.evictable_size()
    chunked = sched.chunked_req
    local_tokens = queue.queued_tokens() + (remaining_prefill_len(chunked) if chunked is not None else 0)
    return {
        "num_running": len(running),
        "num_waiting": len(prealloc.queue)
        + len(prealloc.retracted_queue)
        + len(sched.disagg_decode_transfer_queue.queue)
        + len(sched.waiting_queue)
        + len(queue),
        "queued_prefill_tokens": local_tokens,
        "kv_used_tokens": max(capacity - int(free), 0),
        "kv_capacity_tokens": capacity,
        "running_context_tokens": sum(r.seqlen for r in running),
        "num_local_prefills": len(queue) + len(queue.inflight),
        "queued_local_prefill_tokens": local_tokens,
        "decode_iter_ms": _round2(model.decode_ms),
        "mixed_iter_ms": _round2(model.mixed_ms),
        "tbt_headroom_ms": _round2(policy.headroom_ms(model)),
        "tbt_budget_ms": policy.tbt_slo_ms,
    }
