"""The router's front door against clients that misbehave: slow uploads, stalled headers, too many
connections, malformed HTTP, invalid header bytes, and how their rejections are counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest
from conftest import ClusterFactory, RawConnect, StalledReader
from test_router_support import wait_for

pytestmark = pytest.mark.timeout(60)

SLOW_HEAD = (
    b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 10)


async def test_slow_uploads_hold_no_inflight_slot(
    pd_cluster: ClusterFactory, raw_connect: RawConnect
) -> None:
    """Bodies trickling in must not take the in-flight slots that normal requests need."""
    c = await pd_cluster(max_inflight=4, max_queued=64, max_queue_wait_s=1.0)
    for _ in range(8):
        _, w = await raw_connect(c.url)
        w.write(SLOW_HEAD)
        await w.drain()
    await asyncio.sleep(0.3)
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200
    assert c.router.num_inflight == 0


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    pd_cluster: ClusterFactory, raw_connect: RawConnect
) -> None:
    c = await pd_cluster(body_timeout_s=0.3)
    reader, w = await raw_connect(c.url)
    w.write(SLOW_HEAD)
    await w.drain()
    assert (await _status_line(reader)).startswith(b"HTTP/1.1 408")
    assert c.router.metrics.rejected["body_timeout"] == 1
    assert c.router.metrics.requests[("generate", 408)] == 1


async def test_stalled_headers_are_cut(pd_cluster: ClusterFactory, raw_connect: RawConnect) -> None:
    c = await pd_cluster(header_timeout_s=0.3)
    reader, w = await raw_connect(c.url)
    w.write(b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-")
    await w.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the router
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200


async def test_connections_past_the_cap_are_refused_with_503(
    pd_cluster: ClusterFactory, raw_connect: RawConnect
) -> None:
    c = await pd_cluster(max_connections=4)
    idle = [await raw_connect(c.url) for _ in range(4)]
    await asyncio.sleep(0.1)
    reader, w = await raw_connect(c.url)
    w.write(b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n")
    assert (await _status_line(reader)).startswith(b"HTTP/1.1 503")
    assert c.router.metrics.rejected["connections"] >= 1
    for _, iw in idle:
        iw.close()
    await asyncio.sleep(0.2)
    status, _, _ = await c.post("/generate", {"text": "abc"})
    assert status == 200


async def test_malformed_http_is_one_debug_line(
    pd_cluster: ClusterFactory, raw_connect: RawConnect, caplog: pytest.LogCaptureFixture
) -> None:
    c = await pd_cluster()
    caplog.set_level(logging.DEBUG)
    reader, w = await raw_connect(c.url)
    w.write(b"POST /generate HTTP/1.1\r\nHost: r\r\nContent-Length: abc\r\n\r\n")
    assert b" 400 " in await _status_line(reader)
    await asyncio.sleep(0.1)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]
    malformed = [r for r in caplog.records if "malformed HTTP" in r.getMessage()]
    assert len(malformed) == 1 and malformed[0].exc_info is None and malformed[0].levelno == logging.DEBUG


async def test_non_utf8_authorization_header_is_401(
    pd_cluster: ClusterFactory, raw_connect: RawConnect
) -> None:
    c = await pd_cluster(api_key="k")
    reader, w = await raw_connect(c.url)
    w.write(b"GET /stats HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
    assert (await _status_line(reader)).startswith(b"HTTP/1.1 401")


async def test_an_oversized_body_is_counted_as_413_not_as_an_error(pd_cluster: ClusterFactory) -> None:
    c = await pd_cluster(max_body_bytes=1000)
    status, _, _ = await c.post("/generate", {"text": "a" * 2000})
    assert status == 413
    assert c.router.metrics.requests[("generate", 413)] == 1
    _, raw = await c.get("/stats")
    assert orjson.loads(raw)["requests"]["errors"] == 0


@pytest.mark.slow
async def test_a_client_that_stops_reading_a_stream_is_cut_and_its_upstream_aborted(
    pd_cluster: ClusterFactory, stalled_reader: StalledReader
) -> None:
    c = await pd_cluster(write_timeout_s=0.5)
    body = {"text": "abc", "stream": True, "sampling_params": {"max_new_tokens": 6000}}
    status_line, _ = await stalled_reader(c.url, body)
    assert b" 200 " in status_line
    await wait_for(lambda: len(c.decode.aborted) == 1, timeout_s=20)  # the router let go upstream
    assert c.router.metrics.rejected["slow_reader"] == 1


@pytest.mark.slow
async def test_a_client_that_does_not_read_a_whole_reply_is_cut(
    pd_cluster: ClusterFactory, stalled_reader: StalledReader
) -> None:
    """A non-streamed reply larger than the socket buffers, to a client that never reads it: the
    router drops the connection after ``write_timeout_s`` (not never), counts it, and holds no slot."""
    reply_len = 16 * 1024 * 1024  # past loopback's 4 MiB send buffer and the client's 4 KiB window
    c = await pd_cluster(write_timeout_s=0.5, decode={"pad_len": reply_len})
    status_line, reader = await stalled_reader(c.url, {"text": "abc"})
    assert b" 200 " in status_line
    await wait_for(lambda: c.router.metrics.requests[("generate", 499)] == 1, timeout_s=10)  # ended
    assert c.router.metrics.rejected["slow_reader"] == 1
    assert c.router.num_inflight == 0
    received = 0
    with contextlib.suppress(ConnectionError):  # the cut is a reset, or an end before the reply's end
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
            received += len(chunk)
    assert received < reply_len
