"""In-process checks of the emulator's pieces: radix cache, page chain, and a failing engine loop."""

from __future__ import annotations

import asyncio

import pytest

from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.types import Role
from sglang_ppd.emulator.config import EngineConfig
from sglang_ppd.emulator.engine import Engine
from sglang_ppd.emulator.pages import PageChain
from sglang_ppd.emulator.radix import RadixCache
from sglang_ppd.emulator.request import GenerateInput, Mode, RequestError
from sglang_ppd.emulator.tokens import output_tokens
from sglang_ppd.protocol.block_hash import full_page_hashes
from sglang_ppd.protocol.kv_events import BlockRemoved, BlockStored

pytestmark = pytest.mark.timeout(30)


def test_page_chain_extends_like_hashing_the_whole_sequence() -> None:
    prompt, more = list(range(37)), list(range(100, 150))
    chain = PageChain.of(prompt, 8)
    assert chain.hashes == full_page_hashes(prompt, 8)
    assert chain.extend(prompt + more).hashes == full_page_hashes(prompt + more, 8)


def test_radix_lru_eviction_spares_locked_pages() -> None:
    radix = RadixCache(page_size=4)
    a, b = list(range(16)), list(range(50, 66))
    ha, hb = full_page_hashes(a, 4), full_page_hashes(b, 4)
    events = radix.insert(a, ha, budget_tokens=32)
    assert [e.block_hashes[0] for e in events if isinstance(e, BlockStored)] == ha
    assert radix.match(ha[:2] + [12345]) == 8
    radix.lock(ha)
    # b needs 16 tokens; the budget leaves room for 8 unlocked ones, and a is locked: only b's tail
    # pages beyond the budget can go, leaf first, never a.
    events = radix.insert(b, hb, budget_tokens=8)
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert not set(removed) & set(ha)
    assert radix.match(ha) == 16
    radix.unlock(ha)
    events = radix.evict(16)
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed and radix.cached_tokens == radix.unlocked_tokens


async def test_a_failing_loop_fails_requests_instead_of_hanging() -> None:
    engine = Engine(EngineConfig(role=Role.DECODE, profile=load_profile("h100-llama31-8b"),
                                 model_name="m", ppd=True, time_scale=0.0))

    def boom(max_steps: int = 1) -> None:
        raise RuntimeError("scheduler bug")

    engine.sched.next_iteration = boom  # type: ignore[method-assign,assignment]
    engine.start()
    try:
        handle = engine.submit(GenerateInput("r1", (1, 2, 3), 4, Mode.LOCAL))
        await asyncio.wait_for(handle.wait_finished(), 5)
        assert handle.error is not None and "scheduler bug" in handle.error
        with pytest.raises(RequestError) as err:
            engine.submit(GenerateInput("r2", (1, 2, 3), 4, Mode.LOCAL))
        assert err.value.status == 503
    finally:
        await engine.close()


async def test_time_scale_zero_leaps_but_emits_every_token() -> None:
    engine = Engine(EngineConfig(role=Role.DECODE, profile=load_profile("h100-llama31-8b"),
                                 model_name="m", ppd=True, time_scale=0.0))
    engine.start()
    try:
        inputs = [GenerateInput(f"r{k}", (k, 2, 3), n, Mode.LOCAL) for k, n in ((1, 200), (2, 7))]
        handles = [engine.submit(inp) for inp in inputs]
        for h in handles:
            await asyncio.wait_for(h.wait_finished(), 10)
            assert h.error is None
            assert h.output_ids == output_tokens(list(h.inp.input_ids), h.inp.max_new_tokens)
        assert engine.num_iterations < 50  # 200 decode steps took a handful of leaps
    finally:
        await engine.close()
