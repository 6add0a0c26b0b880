"""Test support (no tests here): in-process fake SGLang workers on loopback, and scripted policies.

The fakes speak the SGLang subset the router uses: ``/server_info`` (with a ``kv_events`` block when
given), ``/generate`` (streaming and not), ``/abort_request``, ``/health``, ``/v1/loads``. Each
records the bodies it received so tests can check what the router sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import orjson
from aiohttp import web

from sglang_ppd.bench.ports import free_port
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import Policy
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo
from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer

PROFILE = load_profile("h100-llama31-8b")


@dataclass
class FakeWorker:
    role: str
    server_info: dict[str, Any] = field(default_factory=dict)
    fail_status: int | None = None
    """Answer /generate with this HTTP status."""
    die_after_chunks: int | None = None
    """Streaming: drop the connection after this many chunks."""
    hang: bool = False
    wait_for_kv: int = 0
    """Streaming: on the first this many requests, send the headers and then wait forever, as an
    SGLang decode server does while its prefill side never delivers the KV."""
    delay_s: float = 0.0
    """Wait this long before answering /generate (a decode side waiting for its KV)."""
    chunk_delay_s: float = 0.0
    """Streaming: pause between chunks (a slow decode)."""
    pad_len: int = 0
    """Non-streaming: this many more characters of text in the reply (one larger than the socket
    buffers between the router and its client)."""
    healthy: bool = True
    silent: bool = False
    """``/v1/loads`` stops answering (a worker whose telemetry went silent, e.g. SIGSTOPped)."""
    received: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeWorker:
        app = web.Application()
        app.router.add_get("/server_info", self._server_info)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/loads", self._loads)
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/abort_request", self._abort)
        self._runner, self.url = await serve_loopback(app, handler_cancellation=True)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _server_info(self, _: web.Request) -> web.Response:
        info = {
            "disaggregation_mode": self.role,
            "page_size": 1,
            "served_model_name": "fake-model",
            "disaggregation_bootstrap_port": 8998,
            "kv_events": None,
            **self.server_info,
        }
        return web.json_response(info)

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _loads(self, _: web.Request) -> web.Response:
        while self.silent:
            await asyncio.sleep(0.05)
        return web.json_response(
            {
                "loads": [
                    {
                        "dp_rank": 0,
                        "num_running_reqs": 2,
                        "num_waiting_reqs": 1,
                        "num_used_tokens": 100,
                        "max_total_num_tokens": 1000,
                    }
                ]
            }
        )

    async def _abort(self, request: web.Request) -> web.Response:
        self.aborted.append((await request.json())["rid"])
        return web.json_response({})

    def _reply(self, ids: list[int], n: int, done: bool) -> dict[str, Any]:
        text = "".join(chr(97 + (sum(ids) + i) % 26) for i in range(n))
        meta: dict[str, Any] = {
            "completion_tokens": n,
            "prompt_tokens": len(ids),
            "finish_reason": {"type": "length"} if done else None,
        }
        if self.role == "prefill":
            meta["input_token_logprobs"] = [[-0.5, t, None] for t in ids]
        else:
            meta["input_token_logprobs"] = []
        return {"text": text, "meta_info": meta}

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        if self.hang:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return web.json_response({"error": {"message": "fake failure"}}, status=self.fail_status)
        ids = body["input_ids"]
        n = 0 if self.role == "prefill" else body["sampling_params"]["max_new_tokens"]
        if not body.get("stream"):
            reply = self._reply(ids, n, True)
            reply["text"] += "x" * self.pad_len
            return web.json_response(reply)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if len(self.received) <= self.wait_for_kv:
            await asyncio.sleep(3600)
        for i in range(1, max(n, 1) + 1):
            if self.die_after_chunks is not None and i > self.die_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(b"data: " + orjson.dumps(self._reply(ids, i if n else 0, i >= n)) + b"\n\n")
            await asyncio.sleep(self.chunk_delay_s)
        await resp.write(b"data: [DONE]\n\n")
        return resp


class ScriptedPolicy(Policy):
    """PD to the first healthy pair, or ``local`` when the first decode worker holds a hit of at least
    ``local_min_hit`` tokens (exact or approximate); records every RequestFeatures it saw."""

    needs_decode_cache: ClassVar[bool] = True
    local_min_hit: int | None = None
    force: RouteKind | None = None

    def __init__(self) -> None:
        super().__init__(Policy.Params(), PROFILE)
        self.seen: list[tuple[RequestFeatures, ClusterSnapshot]] = []

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        self.seen.append((req, snap))
        ds = snap.decode
        if not ds:
            raise RuntimeError("no healthy decode worker")
        d = ds[0]
        local = self.force is RouteKind.LOCAL or (
            self.local_min_hit is not None and req.hit_len(d.worker_id) >= self.local_min_hit
        )
        if local:
            return Route(RouteKind.LOCAL, d.worker_id, reason="test:local")
        ps = snap.prefill
        if not ps:
            raise RuntimeError("no healthy prefill worker")
        return Route(RouteKind.PD, d.worker_id, prefill_worker=ps[0].worker_id, reason="test:pd")


async def start_router(
    workers: list[FakeWorker],
    policy: Policy | None = None,
    **cfg: Any,
) -> tuple[Router, web.AppRunner, str]:
    specs = [{"url": w.url, "role": w.role} for w in workers]
    config = RouterConfig.model_validate(
        {"host": "127.0.0.1", "port": 0, "workers": specs, "health_interval_s": 0.2, **cfg}
    )
    router = Router(config, policy or ScriptedPolicy(), PROFILE, ByteTokenizer(), "scripted")
    runner, port = await start_server(router, "127.0.0.1", 0)
    return router, runner, f"http://127.0.0.1:{port}"


async def wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    """Poll a condition (bounded): KV events and telemetry arrive asynchronously."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def wait_until_healthy(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> None:
    """Poll ``url``'s ``/health`` until it answers 200; fail if ``proc`` exits first or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        while True:
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"{url}: process exited with {proc.returncode}: {err.decode()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with s.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url} never became healthy")
            await asyncio.sleep(0.1)


async def stop_process(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, then SIGKILL after 10 s; the exit code (-1 if none)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1


async def serve_loopback(app: web.Application, **runner_kwargs: Any) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port: (the runner to clean up, the base URL)."""
    runner = web.AppRunner(app, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


class FakeKvPublisher:
    """SGLang's ZmqEventPublisher in miniature: PUB [topic, seq, payload] and a ROUTER replay socket
    that answers from a buffer. ``publish(..., drop=True)`` buffers a batch without sending it (a
    lost message)."""

    def __init__(self, with_replay: bool) -> None:
        import zmq
        import zmq.asyncio

        self.ctx = zmq.asyncio.Context()
        self.port = free_port()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{self.port}")
        self.replay_port: int | None = None
        self.buffer: list[tuple[int, bytes]] = []
        self.seq = 0
        self._replay_task: asyncio.Task[None] | None = None
        if with_replay:
            self.replay_port = free_port()
            self.router = self.ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.bind(f"tcp://127.0.0.1:{self.replay_port}")
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay())

    def kv_events_block(self, block_size: int) -> dict[str, Any]:
        block: dict[str, Any] = {
            "publisher": "zmq",
            "endpoint_host": "*",
            "endpoint_port_base": self.port,
            "topic": "",
            "block_size": block_size,
            "dp_size": 1,
        }
        if self.replay_port is not None:
            block["replay_endpoint_port_base"] = self.replay_port
        return block

    async def _serve_replay(self) -> None:
        from sglang_ppd.protocol import kv_events

        while True:
            ident, _, start = await self.router.recv_multipart()
            first = int.from_bytes(start, "big")
            for seq, payload in self.buffer:
                if seq >= first:
                    await self.router.send_multipart([ident, b"", kv_events.seq_to_bytes(seq), payload])
            await self.router.send_multipart([ident, b"", kv_events.seq_to_bytes(-1), b""])

    async def publish(self, events: list[Any], drop: bool = False, raw: bytes | None = None) -> int:
        from sglang_ppd.protocol import kv_events

        payload = (
            raw if raw is not None else kv_events.encode_batch(kv_events.KVEventBatch(ts=0.0, events=events))
        )
        seq = self.seq
        self.seq += 1
        self.buffer.append((seq, payload))
        if not drop:
            await self.pub.send_multipart([b"", kv_events.seq_to_bytes(seq), payload])
        return seq

    async def resend_first_until(self, predicate: Any, timeout_s: float = 15.0) -> None:
        """Beat ZMQ's slow-joiner: re-send batch 0 (a duplicate to the router) until it is seen."""
        from sglang_ppd.protocol import kv_events

        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("subscriber never received the first batch")
            seq, payload = self.buffer[0]
            await self.pub.send_multipart([b"", kv_events.seq_to_bytes(seq), payload])
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
        self.ctx.destroy(linger=0)
