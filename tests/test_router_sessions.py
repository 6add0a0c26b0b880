"""The router's session map on its own (bounded, least recently served evicted first, evictions
counted), and through the router: a session's second request counts as Turn 2+ until evicted."""

from __future__ import annotations

import orjson
import pytest
from conftest import ClusterFactory

from sglang_ppd.router.sessions import SessionMap


def test_it_remembers_each_sessions_latest_decode_worker() -> None:
    m = SessionMap(4)
    m.remember("a", "http://d0")
    m.remember("a", "http://d1")
    m.remember(None, "http://d0")  # no session: nothing to remember
    assert m.decode_of("a") == "http://d1"
    assert m.decode_of("b") is None and m.decode_of(None) is None
    assert len(m) == 1 and m.num_evicted == 0


def test_the_least_recently_served_session_is_evicted_first_and_counted() -> None:
    m = SessionMap(2)
    m.remember("a", "http://d0")
    m.remember("b", "http://d0")
    m.remember("a", "http://d1")  # served again: now the most recent
    assert m.decode_of("b") == "http://d0"  # a look-up does not refresh it
    m.remember("c", "http://d0")
    assert m.decode_of("b") is None
    assert m.decode_of("a") == "http://d1" and m.decode_of("c") == "http://d0"
    assert len(m) == 2 and m.num_evicted == 1
    for i in range(10):
        m.remember(f"s{i}", "http://d0")
    assert len(m) == 2 and m.num_evicted == 11
    assert m.stats() == {"num_sessions": 2, "max_sessions": 2, "num_evicted": 11}


def test_a_map_that_can_hold_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SessionMap(0)


async def test_a_sessions_second_request_is_turn_2_until_its_session_is_evicted(
    pd_cluster: ClusterFactory,
) -> None:
    c = await pd_cluster()
    c.router.sessions = SessionMap(1)
    stream = {"text": "abc", "stream": True, "sampling_params": {"max_new_tokens": 3}}

    async def turn_counts() -> tuple[int, int]:
        _, raw = await c.get("/stats")
        latency = orjson.loads(raw)["latency"]
        return latency["turn1"]["count"], latency["turn2+"]["count"]

    for session in ("s1", "s1", "s2", "s1"):  # s2 evicts s1: s1's third request is a Turn 1 again
        status, _, _ = await c.post("/generate", stream, {"x-ppd-session-id": session})
        assert status == 200
    assert await turn_counts() == (3, 1)
    _, raw = await c.get("/stats")
    assert orjson.loads(raw)["sessions"] == {"num_sessions": 1, "max_sessions": 1, "num_evicted": 2}
