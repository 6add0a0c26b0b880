"""Security defaults: the auth paths (API key, separate admin key for ``/workers``), loopback bind
defaults of every listening socket (router, emulated workers: HTTP, bootstrap, ZMQ), no pickle on any
wire, and no secret in the router's logs."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_router_support import FakeWorker, free_port, start_router, wait_for

from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.security import RedactingFilter, keys_from_env, secrets_of

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


async def _status(s: aiohttp.ClientSession, method: str, url: str, key: str | None, **kw: object) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with s.request(method, url, headers=headers, **kw) as r:  # type: ignore[arg-type]
        body = await r.read()
        if key is not None:
            assert key.encode() not in body  # a 401 never echoes what was sent
        return r.status


async def test_api_key_and_separate_admin_key() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    extra = await FakeWorker("decode").start()
    _, runner, url = await start_router([p, d], api_key="user-key", admin_key="admin-key")
    gen = {"json": {"text": "a"}}
    add = {"json": {"url": extra.url, "role": "decode"}}
    try:
        async with aiohttp.ClientSession() as s:
            assert await _status(s, "GET", f"{url}/health", None) == 200
            for method, path in (
                ("POST", "/generate"),
                ("GET", "/v1/models"),
                ("GET", "/metrics"),
                ("GET", "/stats"),
                ("GET", "/workers"),
            ):
                kw = gen if method == "POST" else {}
                assert await _status(s, method, f"{url}{path}", None, **kw) == 401, path
                assert await _status(s, method, f"{url}{path}", "not-the-key", **kw) == 401, path
                assert await _status(s, method, f"{url}{path}", "admin-key", **kw) == 401, path
                assert await _status(s, method, f"{url}{path}", "user-key", **kw) == 200, path
            async with s.post(
                f"{url}/generate", json={"text": "a"}, headers={"Authorization": "user-key"}
            ) as r:
                assert r.status == 401  # the Bearer scheme is required
            # /workers changes need the admin key; the API key is not enough.
            assert await _status(s, "POST", f"{url}/workers", None, **add) == 401
            assert await _status(s, "POST", f"{url}/workers", "user-key", **add) == 401
            assert await _status(s, "POST", f"{url}/workers", "admin-key", **add) == 201
            assert await _status(s, "DELETE", f"{url}/workers?url={extra.url}", "user-key") == 401
            assert await _status(s, "DELETE", f"{url}/workers?url={extra.url}", "admin-key") == 200
    finally:
        await runner.cleanup()
        for w in (p, d, extra):
            await w.stop()


async def test_admin_key_alone_guards_only_workers_and_api_key_alone_guards_all() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    try:
        _, runner, url = await start_router([p, d], admin_key="admin-key")
        try:
            async with aiohttp.ClientSession() as s:
                assert await _status(s, "POST", f"{url}/generate", None, json={"text": "a"}) == 200
                assert await _status(s, "DELETE", f"{url}/workers?url={d.url}", None) == 401
        finally:
            await runner.cleanup()
        _, runner, url = await start_router([p, d], api_key="user-key")
        try:
            async with aiohttp.ClientSession() as s:
                assert await _status(s, "DELETE", f"{url}/workers?url={d.url}", None) == 401
                assert await _status(s, "DELETE", f"{url}/workers?url={d.url}", "user-key") == 200
        finally:
            await runner.cleanup()
    finally:
        await p.stop()
        await d.stop()


def test_keys_come_from_the_environment_unless_given() -> None:
    env = {"SGLANG_PPD_API_KEY": "from-env", "SGLANG_PPD_ADMIN_KEY": "admin-env"}
    assert keys_from_env({}, env) == {"api_key": "from-env", "admin_key": "admin-env"}
    assert keys_from_env({"api_key": "flag"}, env)["api_key"] == "flag"
    assert keys_from_env({}, {}) == {}


# --- bind defaults -------------------------------------------------------------------------------
def _listening(pid: int) -> set[tuple[str, int]]:
    """(address hex as in /proc/net/tcp*, port) of every TCP socket ``pid`` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    addr, port = cols[1].split(":")
                    found.add((addr, int(port, 16)))
    return found


async def _until_answering(s: aiohttp.ClientSession, url: str) -> None:
    """Poll ``/health`` until the server answers at all (any status), for at most ~30 s."""
    for _ in range(300):
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with s.get(f"{url}/health"):
                return
        await asyncio.sleep(0.1)


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}
WILDCARD = {"00000000", "00000000000000000000000000000000"}


@pytest.mark.slow
async def test_emulated_worker_binds_loopback_by_default_and_wider_only_when_asked(
    emulated_worker: Any,
) -> None:
    p = emulated_worker("prefill", time_scale=0.0)
    wide = emulated_worker("decode", "--host", "0.0.0.0", time_scale=0.0)
    try:
        # HTTP, bootstrap, KV events, KV replay, LoadStat and telemetry: six sockets, all loopback.
        socks = _listening(p.proc.pid)
        assert len(socks) >= 6 and {a for a, _ in socks} <= LOOPBACK, socks
        assert {a for a, _ in _listening(wide.proc.pid)} <= WILDCARD
    finally:
        p.stop()
        wide.stop()


@pytest.mark.slow
async def test_router_cli_binds_loopback_by_default() -> None:
    assert RouterConfig.model_validate({}).host == "127.0.0.1"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sglang_ppd.cli",
        "router",
        "--port",
        str(port),
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
            await _until_answering(s, f"http://127.0.0.1:{port}")
        socks = _listening(proc.pid)
        assert (("0100007F", port)) in socks and {a for a, _ in socks} <= LOOPBACK, socks
    finally:
        proc.terminate()
        await proc.wait()


# --- wire formats ----------------------------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
UNSAFE_CALLS = {"recv_pyobj", "send_pyobj", "unsafe_load", "full_load"}


@pytest.mark.slow
def test_no_pickle_on_any_wire() -> None:
    """No module of ours imports a pickle-like codec or calls pyzmq's pickling helpers."""
    offenders = []
    files = [*ROOT.glob("sglang_ppd/**/*.py"), *ROOT.glob("policies/**/*.py")]
    assert len(files) > 50
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_CALLS:
                names = [node.attr]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "load"
                and getattr(getattr(node.func, "value", None), "id", None) == "yaml"
            ):
                names = ["yaml.load"]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if n in UNSAFE_MODULES or n in UNSAFE_CALLS or n == "yaml.load"
            ]
    assert offenders == []


# --- secrets in logs ----------------------------------------------------------------------------
def test_redacting_filter_masks_messages_args_and_tracebacks() -> None:
    cfg = RouterConfig.model_validate(
        {"api_key": "k-123", "workers": [{"url": "http://bob:pw-456@127.0.0.1:1", "role": "decode"}]}
    )
    assert secrets_of(cfg) == ["bob:pw-456", "pw-456", "k-123"]
    f = RedactingFilter(secrets_of(cfg))
    try:
        raise RuntimeError("bad key k-123")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, "f", 1, "worker %s key %s", ("http://bob:pw-456@h", "k-123"), sys.exc_info()
        )
    assert f.filter(record)
    text = logging.Formatter().format(record)
    assert "k-123" not in text and "pw-456" not in text and "bob:***@h" not in text and "***" in text


def test_credentials_of_a_worker_added_at_runtime_are_masked_in_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sglang_ppd.router import security

    f = RedactingFilter(["k-123"])
    monkeypatch.setattr(security, "_installed", [f])
    security.redact_url_secrets("http://ops:late-pw@10.0.0.9:30001")
    record = logging.LogRecord(
        "x", logging.INFO, "f", 1, "GET %s", ("http://ops:late-pw@10.0.0.9:30001/x",), None
    )
    assert f.filter(record) and record.getMessage() == "GET http://***@10.0.0.9:30001/x"


@pytest.mark.slow
async def test_router_logs_hold_no_secret() -> None:
    api_key, admin_key, password = "sk-live-0123456789", "adm-9876543210", "hunter2-pw"
    dead = free_port()  # a worker that never answers: its URL (with credentials) gets logged
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sglang_ppd.cli",
        "router",
        "--port",
        str(port),
        "--log-level",
        "debug",
        "--decode",
        f"http://admin:{password}@127.0.0.1:{dead}",
        "--admin-key",
        admin_key,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SGLANG_PPD_API_KEY": api_key},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            await _until_answering(s, url)
            assert await _status(s, "POST", f"{url}/generate", api_key, json={"text": "a"}) == 503
            assert await _status(s, "POST", f"{url}/generate", "nope", json={"text": "a"}) == 401
            assert await _status(s, "GET", f"{url}/workers", api_key) == 200
            await asyncio.sleep(0.5)  # a health check or two against the dead worker
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    assert "127.0.0.1" in text and "***" in text  # it did log about the worker, masked
    for secret in (api_key, admin_key, password):
        assert secret not in text, secret


async def test_client_rid_that_could_forge_log_lines_is_refused() -> None:
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    _, runner, url = await start_router([p, d])
    try:
        async with aiohttp.ClientSession() as s:
            for rid, status in (("ok-rid-1", 200), ("x\nINFO forged line", 400), ("r" * 257, 400)):
                async with s.post(f"{url}/generate", json={"text": "a", "rid": rid}) as r:
                    assert r.status == status, rid
        assert [b["rid"] for b in d.received] == ["ok-rid-1"]
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


@pytest.mark.slow
async def test_a_rid_already_in_flight_is_refused() -> None:
    """Workers key a request's state and its abort by rid: two at once would corrupt both."""
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode", delay_s=0.5).start()
    router, runner, url = await start_router([p, d])
    try:
        async with aiohttp.ClientSession() as s:
            first = asyncio.create_task(s.post(f"{url}/generate", json={"text": "a", "rid": "same"}))
            await wait_for(lambda: "same" in router.reliability.inflight_rids)
            async with s.post(f"{url}/generate", json={"text": "b", "rid": "same"}) as r:
                assert r.status == 409 and "already in flight" in await r.text()
            async with await first as r:
                assert r.status == 200
            async with s.post(f"{url}/generate", json={"text": "c", "rid": "same"}) as r:
                assert r.status == 200
        assert [b["rid"] for b in d.received] == ["same", "same"] and not router.reliability.inflight_rids
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()


def test_worker_credentials_are_masked_in_api_replies() -> None:
    from sglang_ppd.router.security import public_url

    assert public_url("http://ops:s3cret@10.0.0.5:30001") == "http://ops:***@10.0.0.5:30001"
    assert public_url("http://127.0.0.1:30001") == "http://127.0.0.1:30001"
