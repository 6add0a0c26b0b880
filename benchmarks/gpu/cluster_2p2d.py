"""Measured runs on a running 2P2D cluster (real SGLang on 4 GPUs, or emulated), then the simulator.

    # on the device, from benchmarks/gpu/cluster_2p2d.sh (the servers are already up):
    python3 benchmarks/gpu/cluster_2p2d.py run --out DIR --deadline-epoch T [--plan ...]
    # here, on the returned results:
    python benchmarks/gpu/cluster_2p2d.py collect DIR [--profile ...] [--out benchmarks/results/gpu_2p2d.json]

``run``: for each (workload, load, router) of the plan, in order, while the deadline allows: flush
every server's radix cache (SGLang ``/flush_cache``), start the router (``sglang-ppd router --policy
P``, or the Rust ``sglang_router`` in PD mode), send a few warm-up requests, replay the workload
through it with ``sglang-ppd bench`` (``--api sglang``, input_ids, open loop for Azure, closed-loop
sessions for ShareGPT, ``--duration-s`` of load), read the router's ``/metrics`` (KV bytes moved),
stop the router. Each run's result JSON and a line of ``runs.jsonl`` are written as soon as it ends.

``collect``: the simulator on the same workloads and loads (2P2D, the fitted profile, the cluster's
measured KV capacity, the single-GPU Mooncake TCP bandwidth), restricted like the live run to requests
that arrived inside the load window; the table of live vs sim and the relative error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

PREFILL = [("http://127.0.0.1:30100", 8998), ("http://127.0.0.1:31300", 8999)]
DECODE = ["http://127.0.0.1:32500", "http://127.0.0.1:33700"]
"""As in cluster_2p2d.sh (ports far apart: SGLang picks its NCCL port in [port+100, port+1000])."""
ROUTER_PORT = 30000
WORKLOADS = {
    # the bursty Azure conversation trace, its busiest stretch (open loop, single turn)
    "azure": "azure:start_s=1866,duration_s={dur}",
    # closed-loop multi-turn sessions sampled from the shipped ShareGPT table
    "sharegpt": "sharegpt:n=400,rate=1,think_s=exp:2,max_context=32768",
}
LOADS = {"azure": (1.0, 2.0, 0.5), "sharegpt": (1.0, 2.0, 0.5)}
"""Rate scales; the first is the main load, the others run only if time is left."""
ROUTERS = ("ppd_deflect", "pd", "rust", "pd_cache_aware", "threshold")


def default_plan() -> list[tuple[str, float, str]]:
    """The whole matrix (2 workloads x 3 loads x 5 routers), most wanted first, so a deadline cuts
    the least wanted: ``ppd_deflect`` and ``pd`` at the main Azure load (the load-aware gate, with
    its reference in the same call), then the heavy load, the light load, and the rest of the main
    load (measured before with older router code)."""
    plan = [("azure", LOADS["azure"][0], r) for r in ROUTERS[:2]]
    for load_i in (1, 2, 0):
        plan += [(wl, LOADS[wl][load_i], r) for wl in ("azure", "sharegpt") for r in ROUTERS]
    return [p for i, p in enumerate(plan) if p not in plan[:i]]


def parse_plan(text: str) -> list[tuple[str, float, str]]:
    """``azure:2:pd,sharegpt:0.5:rust`` -> plan entries; errors name the bad item."""
    plan = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or parts[0] not in WORKLOADS or parts[2] not in ROUTERS:
            raise SystemExit(f"--plan item {item!r}: want WORKLOAD:LOAD:ROUTER with WORKLOAD in "
                             f"{sorted(WORKLOADS)} and ROUTER in {list(ROUTERS)}")  # fmt: skip
        plan.append((parts[0], float(parts[1]), parts[2]))
    return plan


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:  # noqa: BLE001 - a probe: report, never raise
        return -1, repr(e).encode()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_router(name: str, logdir: Path) -> subprocess.Popen[bytes]:
    workers: list[str] = []
    for url, boot in PREFILL:
        workers += ["--prefill", url, str(boot)]
    for url in DECODE:
        workers += ["--decode", url]
    env = dict(os.environ)
    if name == "rust":
        env["PYTHONPATH"] = (
            os.environ.get("RUST_ROUTER_PATH", "/tmp/rustrouter") + ":" + env.get("PYTHONPATH", "")
        )
        argv = [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation", *workers,
                "--host", "127.0.0.1", "--port", str(ROUTER_PORT), "--prometheus-port", "29990",
                "--log-level", "warn"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "sglang_ppd.cli", "router", *workers, "--host", "127.0.0.1",
                "--port", str(ROUTER_PORT), "--policy", name, "--log-level", "warning"]  # fmt: skip
    with open(logdir / f"router_{name}.log", "ab") as f:  # the child keeps its own copy of the fd
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_router(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    url = f"http://127.0.0.1:{ROUTER_PORT}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if http(url + "/health", timeout=2)[0] == 200:
            return True
        time.sleep(0.5)
    return False


def warmup(n: int = 4) -> list[int]:
    """A few short PD requests through the router (also the check that the data path works)."""
    rng = random.Random(12345)
    codes = []
    for i in range(n):
        ids = [rng.randrange(100, 30000) for _ in range(200 + 100 * i)]
        body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}}
        codes.append(http(f"http://127.0.0.1:{ROUTER_PORT}/generate", body, timeout=30)[0])
    return codes


def flush_caches() -> dict[str, int]:
    return {u: http(u + "/flush_cache", {}, timeout=10)[0] for u in [p for p, _ in PREFILL] + DECODE}


def metrics_kv() -> dict[str, float]:
    code, text = http(f"http://127.0.0.1:{ROUTER_PORT}/metrics", timeout=5)
    out: dict[str, float] = {}
    if code != 200:
        return out
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(("sglang_ppd_kv_bytes", "sglang_ppd_route")) and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(val)
    return out


def spec_of(wl: str, duration: float) -> str:
    return WORKLOADS[wl].format(dur=int(duration + 5))


def cmd_run(a: argparse.Namespace) -> int:
    out = Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    logdir = out / "logs"
    logdir.mkdir(exist_ok=True)
    plan = parse_plan(a.plan) if a.plan else default_plan()
    if a.only:
        keep = set(a.only.split(","))
        plan = [p for p in plan if p[2] in keep]
    if a.max_runs:
        plan = plan[: a.max_runs]
    log(
        f"plan: {len(plan)} runs, {a.duration_s:g} s of load each, "
        f"deadline in {a.deadline_epoch - time.time():.0f} s"
    )
    for wl, load, rname in plan:
        left = a.deadline_epoch - time.time()
        need = a.duration_s + a.drain_s + 12
        if left < need:
            log(f"skip {wl} x{load:g} {rname}: {left:.0f} s left < {need:.0f}")
            continue
        tag = f"{wl}_x{load:g}_{rname}"
        if (out / "runs" / f"{tag}.json").exists():
            log(f"skip {tag}: measured earlier in this results folder (servers kept between calls)")
            continue
        flushed = flush_caches()
        proc = start_router(rname, logdir)
        ok = wait_router(proc, 40)
        warm = warmup() if ok else []
        rec: dict[str, Any] = {"tag": tag, "workload": wl, "load": load, "router": rname,
                               "spec": spec_of(wl, a.duration_s), "duration_s": a.duration_s,
                               "flush": flushed, "router_ok": ok, "warmup_codes": warm,
                               "t_start": time.time()}  # fmt: skip
        if ok:
            argv = [sys.executable, "-m", "sglang_ppd.bench", "--url", f"http://127.0.0.1:{ROUTER_PORT}",
                    "--workload", rec["spec"], "--api", "sglang", "--seed", str(a.seed),
                    "--rate-scale", str(load), "--duration-s", str(a.duration_s),
                    "--request-timeout-s", str(a.drain_s + a.duration_s), "--workers", str(a.workers),
                    "--label", rname, "--no-progress",
                    "--json", str(out / "runs" / f"{tag}.json"),
                    "--records", str(out / "runs" / f"{tag}.records.jsonl")]  # fmt: skip
            t0 = time.monotonic()
            try:
                r = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=min(a.duration_s + a.drain_s + 10,
                                               max(5.0, left - 5)))  # fmt: skip
                rec["bench_rc"] = r.returncode
                rec["bench_tail"] = (r.stdout + r.stderr)[-1500:]
            except subprocess.TimeoutExpired:
                rec["bench_rc"] = "timeout"
            rec["bench_wall_s"] = time.monotonic() - t0
            rec["metrics"] = metrics_kv()
            rec["stats"] = (
                json.loads(http(f"http://127.0.0.1:{ROUTER_PORT}/stats")[1] or b"null")
                if rname != "rust"
                else None
            )
        stop(proc)
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        res = out / "runs" / f"{tag}.json"
        summ = ""
        if res.exists():
            d = json.loads(res.read_text())
            summ = (f"{d['num_requests']} req ({d['num_failed']} failed), TTFT p50/p95 "
                    f"{d['overall']['ttft_ms']['p50']}/{d['overall']['ttft_ms']['p95']} ms, "
                    f"routes {d.get('routes')}")  # fmt: skip
        log(
            f"done {tag}: router_ok {ok} warm {warm} rc {rec.get('bench_rc')} {summ} "
            f"kv {rec.get('metrics', {}).get('sglang_ppd_kv_bytes_transferred_total')}"
        )
        if a.after_each:
            subprocess.run(a.after_each, shell=True, check=False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--deadline-epoch", type=float, required=True)
    r.add_argument("--duration-s", type=float, default=30.0)
    r.add_argument("--drain-s", type=float, default=20.0)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--plan", help="WORKLOAD:LOAD:ROUTER,... instead of the default plan")
    r.add_argument("--only", help="comma list of routers to keep")
    r.add_argument("--max-runs", type=int)
    r.add_argument("--after-each", help="shell command after each run (pack results into $OUT)")
    c = sub.add_parser("collect")
    c.add_argument("dir")
    c.add_argument("--profile", default="configs/profiles/h100-llama31-8b-ppd-fit.yaml")
    c.add_argument("--kv-capacity", type=int)
    c.add_argument(
        "--link-gbs", type=float, default=1.474, help="Mooncake TCP, measured in benchmarks/gpu.md"
    )
    c.add_argument("--tbt-ms", type=float, default=30.0)
    c.add_argument("--code-note", default="", help="which project code the live run and the sim used")
    c.add_argument("--floor-ms", type=float, default=11.4, help="per-request floor (gpu.md), err_floor_*")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="benchmarks/results/gpu_2p2d.json")
    c.add_argument("--out-dir", default="benchmarks/results/gpu_2p2d")
    a = ap.parse_args()
    if a.cmd == "run":
        return cmd_run(a)
    from cluster_2p2d_collect import cmd_collect  # CPU side only: imports the simulator

    return cmd_collect(a)


if __name__ == "__main__":
    raise SystemExit(main())
