"""BatchScheduler.cancel (SGLang's /abort_request) in every state a request can be in: the KV comes
back at once and exactly once, and the requests left still get exactly their tokens."""

from __future__ import annotations

import pytest

from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.types import Role
from sglang_ppd.sim.iteration import Iteration
from sglang_ppd.sim.scheduler import BatchScheduler

PROFILE = load_profile("h100-llama31-8b")


class Driver:
    """Drives a scheduler the way the emulator does and counts each request's output tokens."""

    def __init__(self, s: BatchScheduler) -> None:
        self.s = s
        self.tokens: dict[str, int] = {}
        self.finished: list[str] = []
        self.prefilled: list[str] = []
        self.allocated: list[str] = []
        self._decoding: set[str] = set()
        self._joining: set[str] = set()

    def incoming(self, rid: str, prompt_len: int, output_len: int) -> None:
        self._got(self.s.add_incoming(rid, rid, prompt_len, output_len))

    def _got(self, allocated: tuple[tuple[str, int], ...]) -> None:
        self.allocated += [rid for rid, _ in allocated]

    def arrive(self, rid: str) -> None:
        self.s.kv_arrived(rid)
        self._joining.add(rid)

    def start(self, max_steps: int = 1) -> Iteration | None:
        it = self.s.next_iteration(max_steps)
        self._decoding |= self._joining
        self._joining.clear()
        return it

    def finish(self, it: Iteration) -> None:
        out = self.s.complete(it)
        if it.num_decodes:
            for rid in self._decoding:
                self.tokens[rid] = self.tokens.get(rid, 0) + it.num_steps
        for rid in out.first_token:
            if rid not in self._decoding:
                self.tokens[rid] = self.tokens.get(rid, 0) + 1
                if rid not in out.finished:
                    self._joining.add(rid)
        for rid in out.finished:
            self._decoding.discard(rid)
        self.finished += out.finished
        self.prefilled += out.prefill_done
        self._got(out.allocated)
        self.s.audit()

    def step(self, max_steps: int = 1) -> bool:
        it = self.start(max_steps)
        if it is not None:
            self.finish(it)
        return it is not None

    def run(self, max_steps: int = 1) -> None:
        while self.step(max_steps):
            pass

    def cancel(self, rid: str) -> bool:
        ok = self.s.cancel(rid)
        self._decoding.discard(rid)
        self._joining.discard(rid)
        self._got(self.s.allocate())
        self.s.audit()
        return ok


def used(s: BatchScheduler) -> int:
    return s.stats().kv_used_tokens


def decode_with_survivor(**kw: object) -> tuple[Driver, int]:
    d = Driver(BatchScheduler(Role.DECODE, PROFILE, tbt_budget_ms=50.0, **kw))  # type: ignore[arg-type]
    d.incoming("keep", 1500, 40)
    d.arrive("keep")
    d.step()
    return d, used(d.s)


@pytest.mark.parametrize("max_steps", [1, 16])
def test_cancel_a_decoding_request_frees_its_kv_and_keeps_the_batch_exact(max_steps: int) -> None:
    d, before = decode_with_survivor()
    d.incoming("gone", 3000, 500)
    d.arrive("gone")
    for _ in range(5 if max_steps == 1 else 2):
        d.step(max_steps)
    assert d.s.stats().num_running == 2
    ctx_before = d.s.stats().running_context_tokens
    assert d.cancel("gone")
    s = d.s.stats()
    assert used(d.s) == before and s.num_running == 1
    assert s.running_context_tokens == ctx_before - (3000 + d.tokens["gone"])
    # The computed sequence stays cached (unlocked): the next turn of that session hits it.
    assert d.s.hit_len("gone", 10_000) == 3000 + d.tokens["gone"]
    assert not d.cancel("gone")
    assert used(d.s) == before
    d.run(max_steps)
    assert d.finished == ["keep"] and d.tokens["keep"] == 40
    assert used(d.s) == 0


def test_cancel_a_transfer_in_flight_then_one_ready_to_join() -> None:
    d, before = decode_with_survivor()
    d.incoming("gone", 2000, 30)
    assert d.allocated[-1] == "gone" and used(d.s) > before
    assert d.cancel("gone")  # preallocated, KV not arrived: SGLang's prealloc/transfer queue
    assert used(d.s) == before and d.s.stats().num_waiting == 0
    d.incoming("gone2", 2000, 30)
    d.arrive("gone2")  # ready: would join the batch at the next iteration
    assert d.cancel("gone2")
    assert used(d.s) == before
    d.run()
    assert d.finished == ["keep"] and d.tokens == {"keep": 40}


def test_cancel_a_queued_transfer_and_one_blocking_the_queue() -> None:
    d, before = decode_with_survivor(kv_capacity_tokens=5500)
    d.incoming("big", 3000, 400)  # fits
    d.incoming("queued", 3000, 100)  # does not fit behind "big": waits in the prealloc queue
    d.incoming("next", 500, 10)
    assert d.allocated == ["keep", "big"] and d.s.stats().num_waiting == 3
    with_big = used(d.s)
    assert d.cancel("queued")
    assert d.allocated == ["keep", "big", "next"]  # FCFS: "next" no longer waits behind "queued"
    assert used(d.s) == with_big + 510
    d.incoming("late", 3000, 20)
    assert d.cancel("big")  # frees room for "late", which cancel's allocate() admits at once
    assert d.allocated[-1] == "late" and used(d.s) == before + 510 + 3020
    for rid in ("next", "late"):
        d.arrive(rid)
    d.run()
    assert sorted(d.finished) == ["keep", "late", "next"]
    assert d.tokens == {"keep": 40, "next": 10, "late": 20}


def test_cancel_waiting_and_mid_chunk_local_prefills() -> None:
    d, before = decode_with_survivor(chunked_prefill_size=1024)
    d.s.add_local("gone", "gone", 6000, 50)
    d.s.add_local("wait", "wait", 800, 5)
    d.s.add_local("local", "local", 900, 7)
    assert d.cancel("wait")  # waiting, never admitted
    it = d.start()
    assert it is not None and [c[0] for c in it.chunks] == ["gone"]
    assert d.s.stats().kv_used_tokens > before
    assert d.cancel("gone")  # mid-chunk: the iteration in flight still names it
    assert used(d.s) == before and d.s.stats().queued_prefill_tokens == 900
    d.finish(it)  # skips the cancelled chunk
    assert d.s.stats().queued_prefill_tokens == 900
    d.run()
    assert sorted(d.finished) == ["keep", "local"]
    assert d.tokens == {"keep": 40, "local": 7}
    assert not d.cancel("local") and not d.cancel("nope")


def test_cancel_a_local_prefill_after_some_chunks_caches_what_it_computed() -> None:
    d, before = decode_with_survivor(chunked_prefill_size=1024)
    d.s.add_local("gone", "s", 6000, 50)
    d.step()
    d.step()
    assert d.cancel("gone")
    assert used(d.s) == before
    done = d.s.hit_len("s", 6000)
    assert 0 < done < 6000
    d.s.add_local("again", "s", 6000, 3)  # a retry hits the chunks already computed
    d.step()
    assert d.s.request_hit_len("again") == done
    d.run()
    assert d.tokens["again"] == 3 and d.tokens["keep"] == 40


def test_cancel_on_a_prefill_worker_in_every_state() -> None:
    p = Driver(BatchScheduler(Role.PREFILL, PROFILE))
    p.s.add_prefill("keep", "keep", 1000)
    p.run()
    before = used(p.s)
    p.s.add_prefill("long", "long", 20_000)
    p.s.add_prefill("queued", "queued", 500)
    p.step()  # the first 8192 tokens of "long"; "queued" still waits
    it = p.start()
    assert it is not None and [c[0] for c in it.chunks] == ["long"]
    assert p.cancel("long")  # mid-chunk
    assert p.cancel("queued")  # waiting
    assert used(p.s) == before and p.s.stats().queued_prefill_tokens == 0
    p.finish(it)
    assert p.prefilled == ["keep"] and p.s.hit_len("long", 20_000) == 8192
    p.s.add_prefill("done", "done", 700)
    p.run()
    assert p.prefilled == ["keep", "done"]
    assert p.cancel("done")  # prefilled, its KV awaiting a decode worker that never came
    assert not p.cancel("done") and used(p.s) == before
    p.s.release("keep")
    assert used(p.s) == 0
