"""SGLang 0.5.20+'s ``BlockStored.session_id`` reaches policies as ``RequestFeatures.session_workers``,
from a real 0.5.23-encoded KV-event batch over ZMQ (tests/goldens/)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from conftest import ClusterFactory
from test_router_support import FakeKvPublisher, ScriptedPolicy, wait_for

from sglang_ppd.protocol import kv_events
from sglang_ppd.router.httpio import SESSION_HEADER
from sglang_ppd.router.kv_sessions import KvSessions

GOLDENS = Path(__file__).parent / "goldens"
GOLDEN_0_5_23 = msgspec.msgpack.decode((GOLDENS / "sglang-0.5.23-kv.msgpack").read_bytes())
# 0.5.23's own two BlockStored maps (the golden batch ends by clearing everything).
STORED_0_5_23 = msgspec.msgpack.encode([GOLDEN_0_5_23[0], GOLDEN_0_5_23[1][:2], GOLDEN_0_5_23[2]])


def test_sessions_are_bounded_and_forgotten_with_a_cleared_worker() -> None:
    s = KvSessions(max_sessions=2)
    s.saw("a", "w1")
    s.saw("a", "w2")
    s.saw("b", "w1")
    assert s.workers("a") == {"w1", "w2"} and s.workers(None) == frozenset()
    s.saw("c", "w2")  # "a" was seen before "b": it goes first
    assert s.workers("a") == frozenset() and len(s) == 2
    s.forget_worker("w1")
    assert s.workers("b") == frozenset() and s.workers("c") == {"w2"}


async def test_kv_event_sessions_reach_the_policy(pd_cluster: ClusterFactory) -> None:
    pub = FakeKvPublisher(with_replay=False)
    policy = ScriptedPolicy()
    try:
        c = await pd_cluster(decode={"server_info": {"kv_events": pub.kv_events_block(4)}}, policy=policy)
        w = c.router.registry.get(c.decode.url)
        assert w is not None
        await pub.publish([], raw=STORED_0_5_23)  # its second BlockStored names session "sess-1"
        await pub.resend_first_until(lambda: w.num_kv_events > 0)
        params = {"max_new_tokens": 2}
        # SGLang's own session field of the request (what its KV events attribute blocks to).
        status, _, _ = await c.post("/generate", {"input_ids": [1, 2, 3], "sampling_params": params,
                                                  "session_id": "sess-1"})  # fmt: skip
        assert status == 200
        feats = policy.seen[-1][0]
        assert feats.session_id == "sess-1" and feats.session_workers == {c.decode.url}
        body = {"input_ids": [1, 2, 3], "sampling_params": params}
        status, _, _ = await c.post("/generate", body, headers={SESSION_HEADER: "other"})
        assert status == 200 and policy.seen[-1][0].session_workers == frozenset()
        await pub.publish([kv_events.AllBlocksCleared()])
        await wait_for(lambda: not c.router.kv_sessions.workers("sess-1"))
    finally:
        pub.close()
