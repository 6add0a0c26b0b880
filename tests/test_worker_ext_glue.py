"""The scheduler extension's own functions, driven through a fake decode scheduler (no sglang/torch).

These are the functions the GPU runs install on SGLang's Scheduler; here ``self`` is a stand-in with
just the attributes they touch, and SGLang's originals (``sglang_ext._ORIG``) are recording fakes.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sglang_ppd.worker import sglang_ext as ext
from sglang_ppd.worker.carrier import LocalTag, encode_tag


class FakeReq:
    def __init__(self, rid: str, prompt_len: int, cached_len: int = 0, tag: LocalTag | None = None) -> None:
        self.rid = rid
        self.origin_input_ids = list(range(prompt_len))
        self.bootstrap_host = encode_tag(tag) if tag else "10.0.0.1"
        self.time_stats = SimpleNamespace(set_wait_queue_entry_time=lambda: None)
        self.extend_range: Any = None
        self.prefix_indices: list[int] = []
        self._cached_len = cached_len

    def init_next_round_input(self, tree_cache: Any) -> None:
        self.full_untruncated_fill_ids = self.origin_input_ids
        self.prefix_indices = list(range(self._cached_len))


class FakeBatch:
    def __init__(self, reqs: list[Any]) -> None:
        self.reqs = reqs
        self.forward_mode = SimpleNamespace(is_extend=lambda: False, is_decode=lambda: True)

    def is_empty(self) -> bool:
        return not self.reqs


class FakeScheduler:
    def __init__(self, allocatable: int, schedule_first_n: int = 1) -> None:
        self.disagg_decode_prealloc_queue = SimpleNamespace(
            num_reserved_decode_tokens=10,
            queue=[],
            retracted_queue=[],
            scheduler=self,
            allocatable=allocatable,
        )
        self.disagg_decode_transfer_queue = SimpleNamespace(queue=[], pop_transferred=lambda: ["arrived"])
        self.enable_overlap = False
        self.ps = SimpleNamespace(tp_rank=1)
        self.spec_algorithm = SimpleNamespace(is_none=lambda: True)
        self.chunked_req: Any = None
        self.last_batch: Any = None
        self.waiting_queue: list[Any] = []
        self.running_batch = FakeBatch([])
        self.tree_cache = object()
        self.max_running_requests = 64
        self.chunked_prefill_size = 8192
        self.max_prefill_tokens = 16384
        self.schedule_first_n = schedule_first_n
        self.seen: list[tuple[list[str], int]] = []

    def _set_or_validate_priority(self, req: Any) -> bool:
        return True

    def get_new_prebuilt_batch(self, running_batch: Any) -> None:
        return None

    def get_num_allocatable_reqs(self, running_bs: int) -> int:
        return 8

    def get_next_batch_to_run(self, running_batch: Any, last_batch: Any) -> Any:
        """Stands in for SGLang's aggregated scheduler: takes the first n of the waiting queue."""
        self.seen.append(([r.rid for r in self.waiting_queue], self.chunked_prefill_size))
        taken, self.waiting_queue = (
            self.waiting_queue[: self.schedule_first_n],
            self.waiting_queue[self.schedule_first_n :],
        )
        return SimpleNamespace(batch_to_run=FakeBatch(taken) if taken else None, running_batch=running_batch)


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
        "_allocatable_token_budgets": rec("_allocatable_token_budgets", lambda q, *a: q.allocatable),
        "process_decode_queue": rec("process_decode_queue"),
        "is_fully_idle": rec("is_fully_idle", True),
        "get_next_disagg_decode_batch_to_run": rec(
            "stock_next", lambda s, rb: SimpleNamespace(batch_to_run=None, running_batch=rb)
        ),
    })  # fmt: skip
    monkeypatch.delenv("SGLANG_PPD_WORKER_OPTIONS", raising=False)
    yield calls


def test_tagged_requests_go_to_the_local_queue_and_others_to_sglang(
    fake_originals: dict[str, list[Any]],
) -> None:
    s = FakeScheduler(allocatable=10_000)
    local, pd = FakeReq("l1", 100, tag=LocalTag("local", 64)), FakeReq("p1", 100)
    ext._add_request_to_queue(s, local)
    ext._add_request_to_queue(s, pd)
    ext._add_request_to_queue(s, local, True)  # a retracted local decode takes SGLang's retract path
    q = ext._state(s).queue
    assert [e.req.rid for e in q] == ["l1"] and q.waiting[0].chunk_len == 64
    assert [a[1].rid for a in fake_originals["_add_request_to_queue"]] == ["p1", "l1"]
    assert not ext._is_fully_idle(s)


def test_local_step_runs_sglang_on_admitted_requests_and_restores_its_queue() -> None:
    s = FakeScheduler(allocatable=10_000, schedule_first_n=1)
    for rid in ("a", "b"):
        ext._add_request_to_queue(s, FakeReq(rid, 200, cached_len=150, tag=LocalTag("local", None)))
    s.waiting_queue = ["transferred"]
    plan = ext._get_next_disagg_decode_batch_to_run(s, s.running_batch)
    assert [r.rid for r in plan.batch_to_run.reqs] == ["a"]
    # SGLang saw both local requests, never the transferred one, with the budget as chunk size.
    assert s.seen == [(["a", "b"], ext.PpdOptions().max_chunk_len)]
    assert (
        s.waiting_queue == ["transferred"]
        and s.chunked_prefill_size == 8192
        and s.max_prefill_tokens == 16384
    )
    q = ext._state(s).queue
    assert [e.req.rid for e in q] == ["b"] and not q.inflight  # "b" waits again, first in line


def test_admission_leaves_the_kv_sglang_reserves_for_transfers() -> None:
    s = FakeScheduler(allocatable=100)
    ext._add_request_to_queue(s, FakeReq("big", 4000, tag=LocalTag("deflect", None)))
    plan = ext._get_next_disagg_decode_batch_to_run(s, s.running_batch)
    assert plan.batch_to_run is None and s.seen == [([], ext.PpdOptions().max_chunk_len)]
    assert len(ext._state(s).queue) == 1


def test_a_chunked_local_prefill_reserves_kv_and_defers_preallocation(
    fake_originals: dict[str, list[Any]],
) -> None:
    s = FakeScheduler(allocatable=10_000)
    req = FakeReq("d", 3000, tag=LocalTag("deflect", 512))
    ext._add_request_to_queue(s, req)

    def chunk_it(running_batch: Any, last_batch: Any) -> Any:
        s.seen.append(([r.rid for r in s.waiting_queue], s.chunked_prefill_size))
        s.chunked_req, s.waiting_queue = req, []
        req.extend_range = SimpleNamespace(end=512)
        return SimpleNamespace(batch_to_run=FakeBatch([req]), running_batch=running_batch)

    s.get_next_batch_to_run = chunk_it  # type: ignore[method-assign]
    ext._get_next_disagg_decode_batch_to_run(s, s.running_batch)
    assert s.seen == [(["d"], 512)]  # the router's ppd_chunk_len caps the chunk
    # 3000 - 512 tokens still to allocate + the decode reserve come off the prealloc budget.
    assert ext._allocatable_token_budgets(s.disagg_decode_prealloc_queue) == 10_000 - (2488 + 10)
    ext._process_decode_queue(s)
    assert "process_decode_queue" not in fake_originals and s.waiting_queue == ["arrived"]
    s.chunked_req = None
    ext._process_decode_queue(s)
    assert len(fake_originals["process_decode_queue"]) == 1


def test_without_local_work_the_stock_decode_path_runs(fake_originals: dict[str, list[Any]]) -> None:
    s = FakeScheduler(allocatable=10_000)
    ext._get_next_disagg_decode_batch_to_run(s, s.running_batch)
    assert len(fake_originals["stock_next"]) == 1 and s.seen == []
