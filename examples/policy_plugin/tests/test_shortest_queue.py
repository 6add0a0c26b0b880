"""The example plugin, as sglang_ppd runs it: on a hand-made snapshot, found by its entry point, in
the simulator and behind the router of an emulated cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from sglang_ppd_example_policy.shortest_queue import ShortestQueuePolicy

from sglang_ppd.bench.ports import free_block
from sglang_ppd.core.config import ConfigError
from sglang_ppd.core.costmodel import load_profile
from sglang_ppd.core.policy import NoRouteError, load_policy
from sglang_ppd.core.types import ClusterSnapshot, LinkSnapshot, RequestFeatures, Role, Slo, WorkerSnapshot

PROFILE = load_profile("h100-llama31-8b")
LINK = LinkSnapshot(bandwidth_bytes_per_s=50e9, queued_bytes=0, age_ms=0.0)
REQ = RequestFeatures(request_id="r", prompt_len=1000, max_new_tokens=10)
SESSIONS = "sessions:n=6,turns=2,prompt=300,user=30,output=8,think_s=0.1,rate=5"


def worker(wid: str, role: Role, **kw: object) -> WorkerSnapshot:
    return WorkerSnapshot(worker_id=wid, role=role, age_ms=kw.pop("age_ms", 10.0), **kw)  # type: ignore[arg-type]


def policy(**params: object) -> ShortestQueuePolicy:
    p = load_policy("shortest_queue", params, PROFILE)  # by its entry point, as sim and router do
    assert isinstance(p, ShortestQueuePolicy)
    return p


def test_least_queued_prefill_and_least_busy_decode() -> None:
    snap = ClusterSnapshot(
        workers=(worker("p0", Role.PREFILL, queued_prefill_tokens=5000),
                 worker("p1", Role.PREFILL, queued_prefill_tokens=100),
                 worker("d0", Role.DECODE, num_inflight=3), worker("d1", Role.DECODE, num_inflight=1)),
        link=LINK,
    )  # fmt: skip
    route = policy().decide(REQ, snap, Slo())
    assert (route.prefill_worker, route.decode_worker, route.reason) == ("p1", "d1", "shortest_queue")


def test_stale_telemetry_falls_back_to_the_in_flight_count() -> None:
    snap = ClusterSnapshot(
        workers=(worker("p0", Role.PREFILL, age_ms=None, num_inflight=2, queued_prefill_tokens=0),
                 worker("p1", Role.PREFILL, age_ms=None, num_inflight=1, queued_prefill_tokens=9999),
                 worker("d0", Role.DECODE)),
        link=LINK,
    )  # fmt: skip
    route = policy(tokens_per_request=10).decide(REQ, snap, Slo())
    assert (route.prefill_worker, route.reason) == ("p1", "shortest_queue_stale")


def test_no_worker_is_no_route_and_bad_params_are_errors() -> None:
    with pytest.raises(NoRouteError):
        policy().decide(REQ, ClusterSnapshot(workers=(worker("d0", Role.DECODE),), link=LINK), Slo())
    with pytest.raises(ConfigError, match="tokens_per_request"):
        policy(tokens_per_request=0)


def test_runs_in_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cmd = ["sglang-ppd", "sim", "--workload", SESSIONS, "--policy", "shortest_queue", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert (r["num_requests"], r["num_failed"], r["routes"]) == (12, 0, {"pd": 12})


def test_runs_behind_the_emulated_router(tmp_path: Path) -> None:
    base = free_block(4)  # a prefill worker and its bootstrap port, a decode worker, the router
    cfg = {"num_prefill": 1, "num_decode": 1, "base_port": base, "emulator": {"time_scale": 0.1},
           "router": {"port": base + 3, "policy": "shortest_queue"}, "startup_timeout_s": 60}  # fmt: skip
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang_ppd.launch", "--config", str(path), "--log-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{base + 3}"
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while "router ready" not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < deadline, "the cluster did not come up"
        body = json.dumps({"text": "hello", "sampling_params": {"max_new_tokens": 4}}).encode()
        headers = {"Content-Type": "application/json"}
        for _ in range(3):
            req = urllib.request.Request(f"{url}/generate", data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert len(json.loads(resp.read())["output_ids"]) == 4
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'sglang_ppd_route_decisions_total{route="pd",reason="shortest_queue"} 3' in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
