"""Probing workers over HTTP: discovery, health checks, and load polling.

:func:`discover` reads a worker's ``/server_info`` and (re)starts its subscribers: KV events into
an exact prefix index (else an approximate one fed by the router), telemetry, SGLang's load
statistics, or, when the worker publishes none of those, a ``/v1/loads`` poll. :func:`health_loop`
checks every worker's ``/health``; a worker back from unhealthy is rediscovered first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from sglang_ppd.core.types import Role
from sglang_ppd.protocol.load_stat import summary_from_loads_json
from sglang_ppd.protocol.server_info import parse_server_info
from sglang_ppd.router import subscribers
from sglang_ppd.router.prefix_index import ApproxPrefixIndex, ExactPrefixIndex
from sglang_ppd.router.workers import WorkerState

if TYPE_CHECKING:
    from sglang_ppd.router.service import Router

log = logging.getLogger(__name__)


async def discover(router: Router, w: WorkerState) -> bool:
    """Read ``/server_info`` and (re)start the worker's subscribers. False if unreachable."""
    try:
        async with router.control.get(f"{w.url}/server_info") as resp:
            if resp.status != 200:
                return False
            info = parse_server_info(orjson.loads(await resp.read()), w.url)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
        log.debug("server_info of %s failed: %s", w.name, exc)
        return False
    w.info = info
    if w.role is Role.PREFILL and w.bootstrap_port is None:
        w.bootstrap_port = info.bootstrap_port or router.cfg.default_bootstrap_port
    if router.cfg.model_name is None and info.model and router.model_name == "default":
        router.model_name = info.model
    if info.disaggregation_mode not in (None, "null", w.role.value):
        log.warning(
            "worker %s reports disaggregation_mode=%s but was registered as %s",
            w.name,
            info.disaggregation_mode,
            w.role.value,
        )
    w.cancel_tasks()
    kv = info.kv_events
    if kv is not None:
        if w.exact_index is not None:
            w.exact_index.clear()  # release its blocks from the shared table
        table = router.prefix.table(kv.block_size)
        w.exact_index = ExactPrefixIndex(table, len(kv.endpoints), router.cfg.exact_max_blocks)
        w.approx_index = None
        for rank, ep in enumerate(kv.endpoints):
            replay = kv.replay_endpoints[rank] if kv.replay_endpoints else None
            consumer = subscribers.KvEventConsumer(
                w, w.exact_index, rank, router.zmq_ctx, replay, router.kv_sessions
            )
            _spawn(w, "kv events", subscribers.run_kv_events(consumer, ep, kv.topic))
    else:
        w.exact_index = None
        w.approx_index = ApproxPrefixIndex(router.cfg.approx_page_size, router.cfg.approx_max_pages)
    if info.telemetry_endpoint is not None:
        _spawn(w, "telemetry", subscribers.run_telemetry(router.zmq_ctx, w, info.telemetry_endpoint))
    if kv is not None and kv.load_endpoints:
        _spawn(w, "loadstat", subscribers.run_loadstat(router.zmq_ctx, w, kv.load_endpoints, kv.load_topic))
    if info.telemetry_endpoint is None and not (kv is not None and kv.load_endpoints):
        _spawn(w, "loads poll", poll_loads(router, w))
    return True


def _spawn(w: WorkerState, name: str, coro: Any) -> None:
    w.tasks.append(asyncio.create_task(subscribers.run_task(name, w, coro)))


async def poll_loads(router: Router, w: WorkerState) -> None:
    while True:
        try:
            async with router.control.get(f"{w.url}/v1/loads", params={"include": "core"}) as resp:
                if resp.status == 200:
                    w.record_load(summary_from_loads_json(orjson.loads(await resp.read())), "v1/loads")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
            log.debug("/v1/loads of %s failed: %s", w.name, exc)
        await asyncio.sleep(router.cfg.loads_poll_interval_s)


async def health_loop(router: Router) -> None:
    while True:
        await asyncio.gather(*(check(router, w) for w in router.registry.all()), return_exceptions=True)
        await asyncio.sleep(router.cfg.health_interval_s)


async def check(router: Router, w: WorkerState) -> None:
    try:
        async with router.control.get(f"{w.url}/health") as resp:
            ok = resp.status == 200
    except aiohttp.ClientConnectorError:
        router.note_failure(w, refused=True)  # nothing listens: the process is gone
        return
    except (aiohttp.ClientError, asyncio.TimeoutError):
        ok = False
    if ok:
        if not w.healthy and (w.info is not None or await discover(router, w)):
            log.info("worker %s is healthy again", w.name)
            w.healthy = True
        w.on_probe_ok()
    else:
        router.note_failure(w)
