"""The iteration-log rows and telemetry fields read off SGLang-shaped batches (stand-ins, no sglang)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sglang_ppd.protocol.telemetry import WorkerTelemetry
from sglang_ppd.worker import sglang_ext
from sglang_ppd.worker.admission import LocalEntry, LocalQueue
from sglang_ppd.worker.batch_view import describe_batch, telemetry_fields
from sglang_ppd.worker.budget import BudgetPolicy, IterationModel, IterationSample


def _req(rid: str, seqlen: int) -> Any:
    return SimpleNamespace(rid=rid, seqlen=seqlen)


def _mode(kind: str) -> Any:
    return SimpleNamespace(is_decode=lambda: kind == "decode", is_extend=lambda: kind in ("extend", "mixed"))


def test_a_mixed_batch_splits_into_prefill_chunks_and_decodes() -> None:
    decs = [_req("d1", 1000), _req("d2", 2000)]
    batch = SimpleNamespace(
        forward_mode=_mode("mixed"),
        reqs=[_req("p1", 0), *decs],
        decoding_reqs=decs,
        extend_lens=[256, 1, 1],
        prefix_lens=[512, 999, 1999],
    )
    new, num_dec, row = describe_batch(batch, log=True)
    assert (new, num_dec) == (256, 2)
    assert row is not None and row["kind"] == "mixed" and row["chunks"] == [[256, 512]]
    assert row["rids"] == ["p1"] and row["ctx_tokens"] == 999 + 1999 + 2


def test_a_decode_batch_is_only_counted_without_a_log() -> None:
    batch = SimpleNamespace(forward_mode=_mode("decode"), reqs=[_req("a", 10), _req("b", 20)])
    assert describe_batch(batch, log=False) == (0, 2, None)
    _, _, row = describe_batch(batch, log=True)
    assert row is not None and row["ctx_tokens"] == 30


def test_telemetry_fields_form_a_valid_snapshot(sglang_release: Callable[..., Any]) -> None:
    """Through each supported release's adapter, on stand-ins bound to that release's contract."""
    make = sglang_release
    if make.version == "0.5.17":  # type: ignore[attr-defined]
        extend = SimpleNamespace(end=1024)
        chunked = make("Req", origin_input_ids=[0] * 3000, extend_range=extend, prefix_indices=[])
    else:
        chunked = make("Req", origin_input_ids=[0] * 3000, extend_end=1024, prefix_len=0)
    remaining = sglang_ext.impl().remaining_prefill_len
    assert remaining(chunked) == 1976
    q: LocalQueue[Any] = LocalQueue(reserve_decode_tokens=0)
    q.push(LocalEntry(req="w", prompt_len=500, route="local", chunk_len=None))
    sched = make(
        "Scheduler",
        disagg_decode_prealloc_queue=make("DecodePreallocQueue", queue=[1], retracted_queue=[]),
        disagg_decode_transfer_queue=make("DecodeTransferQueue", queue=[1, 2]),
        waiting_queue=[],
        max_total_num_tokens=10_000,
        token_to_kv_pool_allocator=SimpleNamespace(available_size=lambda: 6_000),
        tree_cache=SimpleNamespace(evictable_size=lambda: 1_000),
        chunked_req=chunked,
    )
    decs = [_req("d1", 100)]
    plan = SimpleNamespace(
        running_batch=SimpleNamespace(reqs=[]), batch_to_run=SimpleNamespace(decoding_reqs=decs)
    )
    model = IterationModel(0.02, 2.0)
    model.add(IterationSample(8.0, 0, 1))
    fields = telemetry_fields(sched, q, model, BudgetPolicy(30.0, 64, 2048), plan, remaining)
    snap = WorkerTelemetry(worker_url="u", role="decode", seq=1, **fields)
    assert snap.num_running == 1 and snap.num_waiting == 4 and snap.kv_used_tokens == 3_000
    assert snap.queued_local_prefill_tokens == 500 + 1976 and snap.tbt_headroom_ms == 22.0
