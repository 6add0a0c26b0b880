"""The worker's telemetry publisher over a real ZMQ PUB/SUB pair on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from sglang_ppd.protocol import telemetry as wire
from sglang_ppd.worker.telemetry_pub import TelemetryPublisher

FIELDS = dict(num_running=3, num_waiting=1, queued_prefill_tokens=128, kv_used_tokens=1000,
              kv_capacity_tokens=50_000, num_local_prefills=1, decode_iter_ms=8.5)


@pytest.fixture()
def pair() -> Iterator[tuple[TelemetryPublisher, zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = TelemetryPublisher("tcp://127.0.0.1:*", "http://127.0.0.1:30200", "decode", period_ms=50,
                             context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, wire.TOPIC)
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(pub.endpoint)
    yield pub, sub
    pub.close()
    sub.close(linger=0)
    ctx.term()


def _next(sub: zmq.Socket[bytes]) -> wire.WorkerTelemetry:
    topic, payload = sub.recv_multipart()
    assert topic == wire.TOPIC
    return wire.decode(payload)


Pair = tuple[TelemetryPublisher, zmq.Socket[bytes]]


def test_snapshots_follow_changes_and_repeat_periodically(pair: Pair) -> None:
    pub, sub = pair
    pub.update(**FIELDS)
    # The periodic re-send reaches a subscriber that joined after the first send (slow joiner).
    first = _next(sub)
    assert first.num_running == 3 and first.supports_local_prefill and first.role == "decode"
    assert first.worker_url == "http://127.0.0.1:30200"
    pub.update(**{**FIELDS, "num_running": 4})
    seen = _next(sub)
    while seen.num_running != 4:
        seen = _next(sub)
    again = _next(sub)
    assert again.num_running == 4 and again.seq > seen.seq > first.seq


def test_nothing_is_sent_before_the_first_update(pair: Pair) -> None:
    _, sub = pair
    sub.setsockopt(zmq.RCVTIMEO, 300)
    with pytest.raises(zmq.Again):
        sub.recv_multipart()
