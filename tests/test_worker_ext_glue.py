"""The adapter's hooks, driven through stand-ins of a decode scheduler (no sglang/torch).

These are the functions the GPU runs install on SGLang's Scheduler. Each test runs once per supported
release (the ``sglang_release`` fixture selects that release's implementation), and every stand-in
answers only the names that release's contract declares, the contract CI checks against the wheel
(tests/test_worker_contract.py). SGLang's originals (``sglang_ext._ORIG``) are recording fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sglang_ppd.worker import sglang_ext as ext
from sglang_ppd.worker.carrier import LocalTag, encode_tag

Make = Callable[..., Any]


def fake_req(make: Make, rid: str, prompt_len: int, cached_len: int = 0, tag: LocalTag | None = None) -> Any:
    v17 = make.version == "0.5.17"  # type: ignore[attr-defined]
    prefix = {"prefix_indices": []} if v17 else {"prefix_len": 0, "extend_end": None}
    req = make(
        "Req",
        rid=rid,
        origin_input_ids=list(range(prompt_len)),
        bootstrap_host=encode_tag(tag) if tag else "10.0.0.1",
        time_stats=SimpleNamespace(set_wait_queue_entry_time=lambda: None),
        **({"extend_range": None} if v17 else {}),
        **prefix,
    )

    def init_next_round_input(tree_cache: Any) -> None:
        req.full_untruncated_fill_ids = req.origin_input_ids
        if v17:
            req.prefix_indices = list(range(cached_len))
        else:
            req.prefix_len = cached_len

    req.init_next_round_input = init_next_round_input
    return req


def fake_batch(make: Make, reqs: list[Any]) -> Any:
    batch = make("ScheduleBatch", reqs=reqs)
    batch.forward_mode = SimpleNamespace(is_extend=lambda: False, is_decode=lambda: True)
    batch.is_empty = lambda: not batch.reqs
    return batch


def fake_scheduler(make: Make, allocatable: int, schedule_first_n: int = 1) -> Any:
    s = make("Scheduler")
    s.disagg_decode_prealloc_queue = make(
        "DecodePreallocQueue", num_reserved_decode_tokens=10, queue=[], retracted_queue=[], scheduler=s
    )
    s.disagg_decode_transfer_queue = make(
        "DecodeTransferQueue", queue=[], pop_transferred=lambda: ["arrived"]
    )
    s.enable_overlap = False
    s.enable_hisparse = False
    s.spec_algorithm = SimpleNamespace(is_none=lambda: True)
    s.chunked_req = None
    s.last_batch = None
    s.waiting_queue = []
    s.tree_cache = object()
    s.max_running_requests = 64
    s.chunked_prefill_size = 8192
    s.max_prefill_tokens = 16384
    aborted: list[Any] = []
    mods = make.modules  # type: ignore[attr-defined]
    if make.version == "0.5.17":  # type: ignore[attr-defined]
        mods["sglang.srt.managers.io_struct"] = make(
            "sglang.srt.managers.io_struct", AbortReq=lambda rid: SimpleNamespace(rid=rid)
        )
        s.ps = SimpleNamespace(tp_rank=1)
        s.ipc_channels = SimpleNamespace(
            send_to_tokenizer=SimpleNamespace(send_output=lambda out, req: aborted.append(req.rid))
        )
    else:
        mods["sglang.srt.runtime_context"] = make(
            "sglang.srt.runtime_context", get_parallel=lambda: SimpleNamespace(tp_rank=1)
        )
        mods["sglang.srt.managers.scheduler"] = make(
            "sglang.srt.managers.scheduler", _make_abort_req=lambda req, finished_reason=None: req.rid
        )
        s.dynamic_chunk_sizer = None
        s.processed_tokens_counter = 777
        s._release_aborted_request = lambda req: aborted.append(("released", req.rid))
        s.send_abort_output = lambda out, req: aborted.append(req.rid)
    s._set_or_validate_priority = lambda req: True
    s.get_new_prebuilt_batch = lambda running_batch: None
    s.get_num_allocatable_reqs = lambda running_bs: 8
    seen: list[tuple[list[str], int]] = []

    def get_next_batch_to_run(running_batch: Any, last_batch: Any) -> Any:
        """Stands in for SGLang's aggregated scheduler: takes the first n of the waiting queue."""
        seen.append(([r.rid for r in s.waiting_queue], s.chunked_prefill_size))
        taken, s.waiting_queue = s.waiting_queue[:schedule_first_n], s.waiting_queue[schedule_first_n:]
        batch = fake_batch(make, taken) if taken else None
        return make("NextBatchPlan", batch_to_run=batch, running_batch=running_batch)

    s.get_next_batch_to_run = get_next_batch_to_run
    return s, seen, aborted


ALLOCATABLE = [0]
"""What SGLang's own prealloc budget returns in the current test."""


@pytest.fixture(autouse=True)
def fake_originals(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Any]]]:
    calls: dict[str, list[Any]] = {}

    def rec(name: str, ret: Any = None) -> Any:
        def f(*args: Any) -> Any:
            calls.setdefault(name, []).append(args)
            return ret(*args) if callable(ret) else ret

        return f

    monkeypatch.setattr(ext, "_ORIG", {
        "_add_request_to_queue": rec("_add_request_to_queue"),
        "_allocatable_token_budgets": rec("_allocatable_token_budgets", lambda q, *a: ALLOCATABLE[0]),
        "process_decode_queue": rec("process_decode_queue"),
        "abort_request": rec("abort_request"),
        "is_fully_idle": rec("is_fully_idle", True),
        "get_next_disagg_decode_batch_to_run": rec(
            "stock_next", lambda s, rb: SimpleNamespace(batch_to_run=None, running_batch=rb)
        ),
    })  # fmt: skip
    monkeypatch.delenv("SGLANG_PPD_WORKER_OPTIONS", raising=False)
    yield calls


def test_tagged_requests_go_to_the_local_queue_and_others_to_sglang(
    sglang_release: Make, fake_originals: dict[str, list[Any]]
) -> None:
    make = sglang_release
    s, _, _ = fake_scheduler(make, allocatable=10_000)
    local, pd = fake_req(make, "l1", 100, tag=LocalTag("local", 64)), fake_req(make, "p1", 100)
    ext._add_request_to_queue(s, local)
    ext._add_request_to_queue(s, pd)
    ext._add_request_to_queue(s, local, True)  # a retracted local decode takes SGLang's retract path
    q = ext._state(s).queue
    assert [e.req.rid for e in q] == ["l1"] and q.waiting[0].chunk_len == 64
    assert [a[1].rid for a in fake_originals["_add_request_to_queue"]] == ["p1", "l1"]
    assert not ext._is_fully_idle(s)
    if make.version == "0.5.23":  # type: ignore[attr-defined]
        assert local.arrival_processed_tokens == 777  # stamped as SGLang's own waiting queue does


def test_aborts_and_refusals_of_queued_local_requests_use_the_release_s_cleanup(sglang_release: Make) -> None:
    make = sglang_release
    s, _, aborted = fake_scheduler(make, allocatable=10_000)
    for rid in ("a1", "b1"):
        ext._add_request_to_queue(s, fake_req(make, rid, 100, tag=LocalTag("local", None)))
    ext._abort_request(s, make("AbortReq", abort_all=False, rid="a", finished_reason=None))
    assert [e.req.rid for e in ext._state(s).queue] == ["b1"]
    s._set_or_validate_priority = lambda req: False
    ext._add_request_to_queue(s, fake_req(make, "c1", 100, tag=LocalTag("local", None)))
    assert [e.req.rid for e in ext._state(s).queue] == ["b1"]
    if make.version == "0.5.17":  # type: ignore[attr-defined]
        assert aborted == ["a1"]
    else:  # 0.5.23 releases an aborted request's cache-side state before telling the tokenizer
        assert aborted == [("released", "a1"), "a1", ("released", "c1")]


def test_local_step_runs_sglang_on_admitted_requests_and_restores_its_queue(sglang_release: Make) -> None:
    make = sglang_release
    s, seen, _ = fake_scheduler(make, allocatable=10_000, schedule_first_n=1)
    ALLOCATABLE[0] = 10_000
    for rid in ("a", "b"):
        ext._add_request_to_queue(s, fake_req(make, rid, 200, cached_len=150, tag=LocalTag("local", None)))
    s.waiting_queue = ["transferred"]
    plan = ext._get_next_disagg_decode_batch_to_run(s, fake_batch(make, []))
    assert [r.rid for r in plan.batch_to_run.reqs] == ["a"]
    # SGLang saw both local requests, never the transferred one, with the budget as chunk size.
    assert seen == [(["a", "b"], ext.PpdOptions().max_chunk_len)]
    assert (
        s.waiting_queue == ["transferred"]
        and s.chunked_prefill_size == 8192
        and s.max_prefill_tokens == 16384
    )
    q = ext._state(s).queue
    assert [e.req.rid for e in q] == ["b"] and not q.inflight  # "b" waits again, first in line


def test_admission_leaves_the_kv_sglang_reserves_for_transfers(sglang_release: Make) -> None:
    make = sglang_release
    s, seen, _ = fake_scheduler(make, allocatable=100)
    ALLOCATABLE[0] = 100
    ext._add_request_to_queue(s, fake_req(make, "big", 4000, tag=LocalTag("deflect", None)))
    plan = ext._get_next_disagg_decode_batch_to_run(s, fake_batch(make, []))
    assert plan.batch_to_run is None and seen == [([], ext.PpdOptions().max_chunk_len)]
    assert len(ext._state(s).queue) == 1


def test_a_chunked_local_prefill_reserves_kv_and_defers_preallocation(
    sglang_release: Make, fake_originals: dict[str, list[Any]]
) -> None:
    make = sglang_release
    s, seen, _ = fake_scheduler(make, allocatable=10_000)
    ALLOCATABLE[0] = 10_000
    req = fake_req(make, "d", 3000, tag=LocalTag("deflect", 512))
    ext._add_request_to_queue(s, req)

    def chunk_it(running_batch: Any, last_batch: Any) -> Any:
        seen.append(([r.rid for r in s.waiting_queue], s.chunked_prefill_size))
        s.chunked_req, s.waiting_queue = req, []
        if make.version == "0.5.17":  # type: ignore[attr-defined]
            req.extend_range = SimpleNamespace(end=512)
        else:
            req.extend_end = 512
        return make("NextBatchPlan", batch_to_run=fake_batch(make, [req]), running_batch=running_batch)

    s.get_next_batch_to_run = chunk_it
    ext._get_next_disagg_decode_batch_to_run(s, fake_batch(make, []))
    assert seen == [(["d"], 512)]  # the router's ppd_chunk_len caps the chunk
    # 3000 - 512 tokens still to allocate + the decode reserve come off the prealloc budget.
    assert ext._allocatable_token_budgets(s.disagg_decode_prealloc_queue) == 10_000 - (2488 + 10)
    ext._process_decode_queue(s)
    assert "process_decode_queue" not in fake_originals and s.waiting_queue == ["arrived"]
    s.chunked_req = None
    ext._process_decode_queue(s)
    assert len(fake_originals["process_decode_queue"]) == 1


def test_without_local_work_the_stock_decode_path_runs(
    sglang_release: Make, fake_originals: dict[str, list[Any]]
) -> None:
    s, seen, _ = fake_scheduler(sglang_release, allocatable=10_000)
    ext._get_next_disagg_decode_batch_to_run(s, fake_batch(sglang_release, []))
    assert len(fake_originals["stock_next"]) == 1 and seen == []


def test_a_stand_in_rejects_names_outside_the_release_s_contract(sglang_release: Make) -> None:
    """The guard the tests above rely on: a name no contract declares cannot be read or written."""
    s, _, _ = fake_scheduler(sglang_release, allocatable=1)
    with pytest.raises(AssertionError, match="no contract entry declares"):
        s.running_batch = None
    other = "ps" if sglang_release.version == "0.5.23" else "processed_tokens_counter"  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match=f"Scheduler.{other}"):
        getattr(s, other)
