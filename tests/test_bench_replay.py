"""``sglang-ppd bench`` end to end against a fake SGLang/OpenAI server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from sglang_ppd.bench.capacity import main as capacity_main
from sglang_ppd.bench.capacity import wait_listening
from sglang_ppd.bench.cli import main
from sglang_ppd.bench.ports import free_port
from sglang_ppd.bench.runner import BenchOptions, Replay
from sglang_ppd.bench.stub import MODEL_ID, StubConfig, build_app
from sglang_ppd.metrics.result import read_records_jsonl
from sglang_ppd.metrics.summary import stats
from sglang_ppd.workload import load_trace

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    cfg: StubConfig
    url: str

    @property
    def log(self) -> list[tuple[list[int], list[int]]]:
        assert self.cfg.log is not None
        return self.cfg.log


@contextlib.contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """``app`` on a free loopback port, in a thread of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[Served]:
    cfg = StubConfig(itl_ms=1.0)
    with serving(build_app(cfg)) as url:
        yield Served(cfg, url)


SESSIONS = "sessions:n=3,turns=3,prompt=20,user=5,output=4,think_s=0.01,rate=50"
KEYS = {
    "policy", "seed", "num_requests", "wall_s", "overall", "turn1", "turn2plus", "slo_attainment",
    "goodput_rps", "kv_bytes_transferred", "routes", "by_route", "reasons", "num_failed", "machine",
}  # fmt: skip


def check_history(log: list[tuple[list[int], list[int]]]) -> int:
    """Each later turn's prompt starts with an earlier request's prompt + output; returns how many."""
    continued = 0
    for i, (prompt, _) in enumerate(log):
        if len(prompt) > 20:
            assert any(prompt[: len(p) + len(o)] == p + o for p, o in log[:i]), "history is not prompt+output"
            continued += 1
    return continued


@pytest.mark.parametrize("incremental", [False, True])
def test_closed_loop_sessions_sglang(server: Served, tmp_path: Path, incremental: bool) -> None:
    server.cfg.incremental = incremental
    out = tmp_path / "r.json"
    rec = tmp_path / "r.jsonl"
    argv = ["--url", server.url, "--workload", SESSIONS, "--seed", "1", "--no-progress", "--json", str(out)]
    rc = main(argv + ["--records", str(rec)])
    assert rc == 0
    s = json.loads(out.read_text())
    rows = [json.loads(line) for line in rec.read_text().splitlines()]
    # the per-request records give back the summary's numbers (what a stricter SLO is applied to later)
    assert len(rows) == 9 and sorted(r["turn"] for r in rows) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert sum(r["ttft_ms"] for r in rows) / 9 == pytest.approx(s["overall"]["ttft_ms"]["mean"], rel=1e-6)
    assert sum(r["tpot_ms"] for r in rows) / 9 == pytest.approx(s["overall"]["tpot_ms"]["mean"], rel=1e-6)
    assert all(r["error"] is None and "itl_ms" not in r for r in rows)
    back = read_records_jsonl(rec)
    assert stats(r.ttft_ms for r in back if r.ok) == s["overall"]["ttft_ms"]
    assert stats(r.tpot_ms for r in back if r.tpot_ms is not None) == s["overall"]["tpot_ms"]
    assert set(s) >= KEYS
    assert s["num_requests"] == 9 and s["num_failed"] == 0
    assert s["turn1"]["count"] == 3 and s["turn2plus"]["count"] == 6
    assert s["routes"] == {"pd": 9}
    assert s["overall"]["ttft_ms"]["count"] == 9 and s["overall"]["itl_ms"]["count"] == 9 * 3
    assert s["history_exact"] is True
    # The stub reports as cached the earlier prompt + output a prompt starts with: 24 of 29, 33 of 38.
    assert s["cached_prompt_fraction"] == {"turn1": 0.0, "turn2plus": pytest.approx(171 / 201)}
    assert sorted(len(p) for p, _ in server.log) == [20] * 3 + [29] * 3 + [38] * 3
    assert check_history(server.log) == 6
    assert sorted(server.cfg.turns or ()) == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_openai_api(server: Served, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = [
        "--url",
        server.url,
        "--api",
        "openai",
        "--workload",
        SESSIONS,
        "--no-progress",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    s = json.loads(out.read_text())
    assert s["num_requests"] == 9 and s["num_failed"] == 0 and s["model"] == MODEL_ID
    assert s["cached_prompt_fraction"]["turn2plus"] == pytest.approx(171 / 201)
    assert check_history(server.log) == 6


def test_failures_are_recorded_and_end_the_session(server: Served, tmp_path: Path) -> None:
    server.cfg.fail_len = 4
    out = tmp_path / "r.json"
    rc = main(["--url", server.url, "--workload", SESSIONS, "--no-progress", "--json", str(out)])
    s = json.loads(out.read_text())
    assert rc == 1
    # Every turn 1 fails, so no later turn is sent.
    assert s["num_requests"] == 3 and s["num_failed"] == 3 and s["num_not_sent"] == 6
    assert s["slo_attainment"] == 0.0


@pytest.mark.slow
def test_timeout_and_bounds(server: Served, tmp_path: Path) -> None:
    server.cfg.hang_len = 4
    out = tmp_path / "r.json"
    argv = ["--url", server.url, "--workload", "sessions:n=5,turns=1,prompt=8,output=uniform:3:5,rate=100"]
    argv += ["--request-timeout-s", "2", "--max-requests", "4", "--no-progress", "--json", str(out)]
    main(argv)
    s = json.loads(out.read_text())
    assert s["num_requests"] == 4 and s["num_planned"] == 4 and s["num_not_sent"] == 0
    # Only the requests that did not hang reach the log; the others time out.
    assert s["num_failed"] == 4 - len(server.log) > 0
    assert s["errors"] == {"timeout after 2 s": s["num_failed"]}


@pytest.mark.slow
def test_open_loop_trace_duration_bound(server: Served, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["--url", server.url, "--workload", "azure:n=400", "--rate-scale", "20", "--duration-s", "1.0"]
    argv += ["--no-progress", "--json", str(out), "--limit", "400"]
    assert main(argv) == 0
    s = json.loads(out.read_text())
    # The first 400 Azure requests span about 70 s; at 20x, about 3.5 s: a 1-s run sends a part.
    assert 0 < s["num_requests"] < 400 and s["num_failed"] == 0
    assert s["num_not_sent"] == 400 - s["num_requests"]
    assert s["turn2plus"]["count"] == 0


def test_unreachable_endpoint_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(
        ["--url", "http://127.0.0.1:9", "--workload", "azure:n=3", "--rate-scale", "1000"]
        + ["--no-progress", "--json", str(out)]
    )
    assert rc == 1
    s = json.loads(out.read_text())
    assert s["num_failed"] == 3
    # The console says why they failed, not only how many.
    err = capsys.readouterr().err
    assert "failed 3x:" in err and next(iter(s["errors"])) in err
    assert main(["--url", "http://x", "--workload", "nope:", "--no-progress"]) == 2
    assert main(["--url", "x", "--workload", "azure:", "--no-progress"]) == 2


@pytest.mark.slow
def test_module_entry_points(tmp_path: Path) -> None:
    """``python -m sglang_ppd.bench`` against ``python -m sglang_ppd.bench.stub``, both subprocesses."""
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "sglang_ppd.bench.stub", "--port", str(port), "--incremental"]
    )
    try:
        wait_listening(port)
        out = tmp_path / "r.json"
        cmd = [sys.executable, "-m", "sglang_ppd.bench", "--url", f"http://127.0.0.1:{port}"]
        cmd += ["--workload", "mooncake:n=30", "--rate-scale", "50", "--no-progress", "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        s = json.loads(out.read_text())
        assert s["num_requests"] == 30 and s["num_failed"] == 0
    finally:
        stub.terminate()
        stub.wait(timeout=10)


@pytest.mark.slow
def test_capacity_sweep_runs(tmp_path: Path) -> None:
    out = tmp_path / "cap.json"
    assert capacity_main(["--rates", "20", "--duration-s", "0.5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["api"] for r in rows] == ["sglang", "openai"]
    assert all(r["num_requests"] > 0 and r["num_failed"] == 0 for r in rows)


def test_retry_once_when_the_connection_closes_before_any_response(tmp_path: Path) -> None:
    """The keep-alive race: the server closes a connection the client just sent a request on. The
    client retries on a fresh connection; a second close is recorded as a failure."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET "):  # the bench asking whether this is an sglang_ppd router: no
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        accepted.append(1)
        length = next(
            int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
        )
        body = json.loads(await reader.readexactly(length))
        if len(accepted) % 2 == 1 or body["sampling_params"]["max_new_tokens"] == 3:
            writer.close()  # drop it without a byte of response
            return
        n = body["sampling_params"]["max_new_tokens"]
        chunk = {"output_ids": list(range(n)), "meta_info": {"completion_tokens": n}}
        payload = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for output_len, num_failed, num_accepted in ((2, 0, 2), (3, 1, 4)):
            out = tmp_path / f"r{output_len}.json"
            spec = f"sessions:n=1,turns=1,prompt=8,output={output_len}"
            main(["--url", url, "--workload", spec, "--no-progress", "--json", str(out)])
            s = json.loads(out.read_text())
            assert (s["num_requests"], s["num_failed"], len(accepted)) == (1, num_failed, num_accepted)
        assert list(s["errors"]) == ["ServerDisconnectedError: Server disconnected"]
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_open_loop_continuation_waits_for_its_parent(server: Served, tmp_path: Path) -> None:
    """A Mooncake continuation that arrives before its parent finished is sent when the parent's
    output (part of its prompt) is known."""
    trace = tmp_path / "two.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 6, "hash_ids": [7, 8, 9]},
        {"timestamp": 0, "input_length": 1700, "output_length": 4, "hash_ids": [7, 8, 9, 10]},
    ]
    trace.write_text("\n".join(json.dumps(r) for r in rows))
    workload = load_trace(trace)
    assert [(t.session_id, t.turn, t.arrival_s) for t in workload] == [("mc1", 1, 0.0), ("mc1", 2, 0.0)]
    result = asyncio.run(Replay(BenchOptions(url=server.url, seed=3)).run(workload))
    parent, child = sorted(result.records, key=lambda r: r.turn)
    assert parent.ok and child.ok
    assert parent.finish_s is not None and child.arrival_s >= parent.finish_s
    (p_prompt, p_out), (c_prompt, _) = server.log
    assert c_prompt[: len(p_prompt) + len(p_out)] == p_prompt + p_out
    assert len(c_prompt) == 1700 and child.input_len == 1700


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished(server: Served, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "sglang_ppd.bench", "--url", server.url, "--no-progress", "--json", str(out)]
    cmd += ["--workload", "sessions:n=1000,rate=20,turns=1,prompt=8,output=2"]
    # Ctrl-C as a terminal sends it, whatever this test runs under: a runner started in the background
    # (`cmd &` without job control, nohup) ignores SIGINT, and a child would inherit that.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        # Interrupt once some requests have been answered in full (and the client had time to read
        # their end).
        for _ in range(600):
            if len(server.log) >= 10:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # Interrupted is not finished: a script must be able to tell from the exit code, a person from
    # the console.
    assert proc.returncode == 130, err
    assert b"interrupted after" in err
    s = json.loads(out.read_text())
    assert s["interrupted"] is True
    assert 1 <= s["num_requests"] < 1000 and s["num_failed"] == 0


@pytest.mark.slow
def test_several_client_processes(server: Served, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main(
        ["--url", server.url, "--workload", SESSIONS, "--workers", "2", "--no-progress", "--json", str(out)]
    )
    assert rc == 0
    s = json.loads(out.read_text())
    assert (s["num_requests"], s["num_failed"], s["client_workers"]) == (9, 0, 2)
    assert s["turn2plus"]["count"] == 6 and s["history_exact"] is True
    assert check_history(server.log) == 6
    # --max-requests is split between the processes: 2 + 1.
    spec = "sessions:n=5,turns=1,prompt=8,output=2,rate=100"
    main(
        ["--url", server.url, "--workload", spec, "--workers", "2", "--max-requests", "3"]
        + ["--no-progress", "--json", str(out)]
    )
    assert json.loads(out.read_text())["num_requests"] == 3


@pytest.mark.slow
def test_policy_and_kv_bytes_come_from_the_router(tmp_path: Path) -> None:
    """Against an sglang_ppd router the result names its policy and the KV bytes its /metrics counted
    during the run (the records of a live run carry none), and the console shows the route mix."""
    cfg = StubConfig()
    app = build_app(cfg)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"policy": "my_policy"})

    async def metrics(request: web.Request) -> web.Response:
        n = len(cfg.log or ())
        return web.Response(text=(
            "# TYPE sglang_ppd_kv_bytes_transferred_total counter\n"
            f"sglang_ppd_kv_bytes_transferred_total {5000 + 1000 * n}\n"
            f"sglang_ppd_kv_bytes_avoided_total {3e9 * n}\n"
        ))  # fmt: skip

    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    out = tmp_path / "r.json"
    with serving(app) as url:
        cmd = [sys.executable, "-m", "sglang_ppd.bench", "--url", url, "--workload", SESSIONS]
        proc = subprocess.run(cmd + ["--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert s["policy"] == "my_policy"
    assert (s["kv_bytes_transferred"], s["kv_bytes_avoided"]) == (9 * 1000, 9 * 3_000_000_000)
    # Piped: progress lines, and the table at full width (rich would cut it to 80 columns).
    assert "9 of 9 requests done, 0 failed" in proc.stderr
    assert "routes: pd 9 (100%)" in proc.stderr
    assert "27.00 GB not moved" in proc.stderr
    assert "turn 2+" in proc.stderr and "TTFT p50 ms" in proc.stderr


def test_a_plain_endpoint_has_no_kv_bytes(server: Served, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["--url", server.url, "--workload", SESSIONS, "--no-progress", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    # Unknown, not zero: the stub has no /metrics.
    assert (s["policy"], s["kv_bytes_transferred"], s["kv_bytes_avoided"]) == ("endpoint", None, None)
