"""Launch: the exact SGLang command lines (no GPU needed), config errors, and a real emulated
cluster brought up and torn down with SIGTERM leaving no orphan processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from sglang_ppd.bench.ports import free_block
from sglang_ppd.core.config import ConfigError, validate
from sglang_ppd.launch.config import LaunchConfig
from sglang_ppd.launch.plan import make_plan

pytestmark = pytest.mark.timeout(90)


def sglang_plan(**extra: object):
    cfg = validate(LaunchConfig, {"backend": "sglang", "num_prefill": 1, "num_decode": 2, "page_size": 16,
                                  "sglang": {"model_path": "/models/llama", "decode_gpus": ["2", "3"]},
                                  "router": {"policy": "ppd"}, **extra}, "test")
    return make_plan(cfg, port=30123)


def test_sglang_command_lines() -> None:
    plan = sglang_plan()
    p, d0, d1 = plan.workers
    assert p.env == {"CUDA_VISIBLE_DEVICES": "0"} and d1.env == {"CUDA_VISIBLE_DEVICES": "3"}
    assert p.argv[1:3] == ("-m", "sglang.launch_server") and d0.argv[1:3] == ("-m", "sglang_ppd.worker")
    pa, da = list(p.argv), list(d0.argv)
    assert pa[pa.index("--disaggregation-mode") + 1] == "prefill"
    assert pa[pa.index("--disaggregation-bootstrap-port") + 1] == "31001"
    assert da[da.index("--disaggregation-mode") + 1] == "decode"
    assert "--disaggregation-decode-enable-radix-cache" in da and "--enable-mixed-chunk" in da
    assert "--disaggregation-decode-enable-radix-cache" not in pa
    assert pa[pa.index("--page-size") + 1] == "16"
    kv = json.loads(da[da.index("--kv-events-config") + 1])
    assert kv["publisher"] == "zmq" and kv["endpoint"].startswith("tcp://127.0.0.1:")
    assert "--ppd-telemetry-endpoint" in da
    assert plan.router_url == "http://127.0.0.1:30123"
    assert plan.router_config["tokenizer"] == "/models/llama"
    assert [w["role"] for w in plan.router_config["workers"]] == ["prefill", "decode", "decode"]
    assert plan.router_config["workers"][0]["bootstrap_port"] == 31001


@pytest.mark.parametrize(("time_scale", "age_ms"), [(0.0, 500.0), (1.0, 500.0), (4.0, 2000.0)])
def test_slow_motion_emulation_scales_the_telemetry_age_limit(time_scale: float, age_ms: float) -> None:
    cfg = validate(LaunchConfig, {"emulator": {"time_scale": time_scale},
                                  "router": {"slo": {"max_telemetry_age_ms": 500, "ttft_ms": 900}}}, "test")
    slo = make_plan(cfg, port=30124).router_config["slo"]
    assert slo["max_telemetry_age_ms"] == age_ms and slo["ttft_ms"] == 900


def test_classic_pd_policy_runs_stock_decode_without_radix_cache() -> None:
    plan = sglang_plan(ppd_decode=False, router={"policy": "pd"})
    d = list(plan.workers[1].argv)
    assert d[1:3] == ["-m", "sglang.launch_server"]
    assert "--disaggregation-decode-enable-radix-cache" not in d and "--enable-mixed-chunk" not in d


def test_config_errors_say_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        validate(LaunchConfig, {"num_prefills": 2}, "test")
    with pytest.raises(ConfigError, match="model_path"):
        make_plan(validate(LaunchConfig, {"backend": "sglang"}, "test"))
    with pytest.raises(ConfigError, match="unknown policy"):
        make_plan(validate(LaunchConfig, {"router": {"policy": "nope"}}, "test"))
    with pytest.raises(ConfigError, match="one per server"):
        sglang_plan(sglang={"model_path": "m", "prefill_gpus": ["0", "1"]})


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (scans /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _launch(
    tmp_path: Path, extra: dict[str, object], temp_dir: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    """The launcher on a free block of ports; its logs in ``tmp_path/logs``, or with ``temp_dir``
    in a temporary directory of the launcher's own making under it."""
    base = free_block(4)
    port = base + 3  # workers take base .. base+2
    cfg = {"num_prefill": 1, "num_decode": 1, "base_port": base, "page_size": 16,
           "emulator": {"time_scale": 0.1}, "router": {"port": port}, "startup_timeout_s": 30, **extra}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    logs = [] if temp_dir else ["--log-dir", str(tmp_path / "logs")]
    env = {**os.environ, "TMPDIR": str(temp_dir)} if temp_dir else None
    proc = subprocess.Popen([sys.executable, "-m", "sglang_ppd.launch", "--config", str(path), *logs],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, port


def _wait_ready(proc: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "launch exited early:\n" + "".join(lines)
        lines.append(line)
        if "router ready" in line:
            return lines
    raise AssertionError("launch never became ready:\n" + "".join(lines))


@pytest.mark.slow
def test_a_sigkilled_launcher_leaves_no_orphans(tmp_path: Path) -> None:
    proc, _ = _launch(tmp_path, {})
    kids: set[int] = set()
    try:
        _wait_ready(proc)
        kids = _children(proc.pid)
        assert len(kids) >= 3
        proc.kill()  # no chance to clean up: the children must go by themselves
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [k for k in kids if _alive(k)]:
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:  # a failed run must not leak its workers either
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)


@pytest.mark.slow
def test_launch_emulated_cluster_and_clean_shutdown(tmp_path: Path) -> None:
    proc, port = _launch(tmp_path, {})
    lines = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "launch exited early:\n" + "".join(lines)
            lines.append(line)
            if "router ready" in line:
                break
        assert f"http://127.0.0.1:{port}" in lines[-1]
        body = json.dumps({"text": "hello", "sampling_params": {"max_new_tokens": 4}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert len(json.loads(resp.read())["output_ids"]) == 4
        kids = _children(proc.pid)
        assert len(kids) >= 3  # two workers and the router (plus any threads' helpers)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0
        time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_launch_reports_a_crashing_child_with_its_log(tmp_path: Path) -> None:
    proc, _ = _launch(tmp_path, {"emulator": {"extra_args": ["--no-such-flag"]}})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "exited with code 2" in out and "--no-such-flag" in out


@pytest.mark.slow
def test_launch_refuses_ports_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump({"num_prefill": 1, "num_decode": 1, "router": {"port": port}}))
        out = subprocess.run([sys.executable, "-m", "sglang_ppd.launch", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"{port}" in out.stderr and "already in use" in out.stderr


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# configs/sim-*.yaml are the simulator's (SimConfig); the launch configs are these.
@pytest.mark.parametrize("path", sorted([*CONFIGS.glob("emulated-*.yaml"), *CONFIGS.glob("sglang-*.yaml")]))
def test_shipped_cluster_configs_plan(path: Path) -> None:
    from sglang_ppd.core.config import load_yaml

    plan = make_plan(load_yaml(LaunchConfig, path))
    assert plan.workers and plan.router_url.startswith("http://")


@pytest.mark.slow
def test_temporary_logs_go_on_a_clean_exit_and_stay_on_a_failure(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc, _ = _launch(tmp_path, {}, temp_dir=temp)
    try:
        _wait_ready(proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and not list(temp.iterdir())
    proc, _ = _launch(tmp_path, {"emulator": {"extra_args": ["--no-such-flag"]}}, temp_dir=temp)
    out, _ = proc.communicate(timeout=60)
    kept = list(temp.iterdir())
    assert proc.returncode == 1 and len(kept) == 1 and f"logs kept in {kept[0]}" in out, out


def test_a_router_port_among_the_workers_ports_is_refused() -> None:
    # 1P1D from 31000: prefill 31000 (bootstrap 31001), decode 31002. A router on 31002 would have
    # looked "ready" to the launcher, since /health answered: the decode worker's.
    cfg = validate(LaunchConfig, {"num_prefill": 1, "num_decode": 1, "base_port": 31000}, "test")
    with pytest.raises(ConfigError, match=r"31002 .*twice"):
        make_plan(cfg, 31002)
    assert make_plan(cfg, 31003).router_url.endswith(":31003")
