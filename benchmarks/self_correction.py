"""Self-correction from traffic: a router whose cost profile prices prefill 2x too high, on the
emulated 2P2D cluster (which runs the right profile), converges to the decisions the right profile
makes.

    python benchmarks/self_correction.py [--duration-s 150] [--seed 0] [--window-s 15]

Three arms, each on a fresh cluster with the same workload and seed: the 2x profile with the
router's ``self_correct`` on, the same without it, and the right profile with it on (what the live
cluster costs beyond any profile: HTTP, the Python emulator, a shared 2-core CPU). In every arm
each decision is also made by the right profile's policy on the same features and snapshot with no
correction, and the two routes are compared (kind; for LOCAL/DEFLECT also the decode worker). The
plot shows the share of agreeing decisions per window, and the prefill price each corrected router
has learned (its profile's price times its factor, relative to the right profile's): both
corrected routers should learn the same price whatever profile they started from.

Workload: closed-loop sessions (8 turns, 200-800-token first prompts, 50-200-token user turns,
1 s mean think time, one new session a second) under SLO 2 s / 25 ms, so that decode workers hold
residents and the TBT budget decides: with prefill priced 2x, no append seems to fit 25 ms beside
them (the prefill base alone is 34 ms), while the right profile fits these short ones. Decode
emulators run with ``--tbt-budget-ms 25``. (Where only ratios of prefill costs matter, such as
local vs PD TTFT, a uniformly wrong prefill price changes few decisions: the TBT budget, an
absolute time, is where it bites.)

Writes ``benchmarks/results/self_correction.json`` (timeline, windows, machine, date, seed) and
``benchmarks/results/self_correction.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sglang_ppd.bench.ports import free_block  # noqa: E402
from sglang_ppd.bench.runner import BenchOptions, Replay  # noqa: E402
from sglang_ppd.core.costmodel import DEFAULT_PROFILE, CostProfile, load_profile  # noqa: E402
from sglang_ppd.core.guard import guard  # noqa: E402
from sglang_ppd.core.policy import Policy, load_policy  # noqa: E402
from sglang_ppd.core.stepmodel import StepModel  # noqa: E402
from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo  # noqa: E402
from sglang_ppd.metrics.result import machine_info, write_result_json  # noqa: E402
from sglang_ppd.router.app import start_server  # noqa: E402
from sglang_ppd.router.config import RouterConfig  # noqa: E402
from sglang_ppd.router.service import Router  # noqa: E402
from sglang_ppd.router.tokenizer import ByteTokenizer  # noqa: E402
from sglang_ppd.workload import load_workload  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOAD = ("sessions:n=400,rate=1,turns=8,think_s=exp:1,prompt=uniform:1500:3000,"
            "user=uniform:50:200,output=uniform:32:128")  # fmt: skip
SLO = Slo(ttft_ms=500.0, tpot_ms=30.0)
POLICY = "ppd_deflect"
OFF_BY = 2.0
PREFILL_COEFFS = ("prefill_base_ms", "c_pf_ms", "c_attn_ms", "c_ctx_ms")
ARMS = (
    (f"x{OFF_BY:g} profile, corrected", OFF_BY, True),
    (f"x{OFF_BY:g} profile, uncorrected", OFF_BY, False),
    ("right profile, corrected", 1.0, True),
)
"""(name, prefill price of the router's profile relative to the right one, self_correct)."""


def prefill_off_by(profile: CostProfile, factor: float) -> CostProfile:
    s = profile.step
    step = s.model_copy(update={k: getattr(s, k) * factor for k in PREFILL_COEFFS})
    return profile.model_copy(update={"name": f"{profile.name}-prefill-x{factor}", "step": step})


def _key(r: Route) -> str:
    return r.kind.value if r.kind is RouteKind.PD else f"{r.kind.value}@{r.decode_worker}"


class Shadowed(Policy):
    """The router's (wrong-profile) policy, with the right profile's decision recorded beside it."""

    def __init__(self, wrong: Policy, right: Policy, t0: float) -> None:
        super().__init__(wrong.params, wrong.profile)
        self.needs_decode_cache = wrong.needs_decode_cache  # type: ignore[misc]
        self.wrong, self.right, self.t0 = wrong, right, t0
        self.wrong_step, self.right_step = StepModel.of(wrong.profile), StepModel.of(right.profile)
        self.timeline: list[dict[str, Any]] = []

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        route = self.wrong.decide(req, snap, slo)
        ours = guard(route, req, snap, slo, self.wrong_step)
        plain = ClusterSnapshot(
            tuple(dataclasses.replace(w, prefill_cost_factor=1.0) for w in snap.workers), snap.link
        )
        theirs = guard(self.right.decide(req, plain, slo), req, plain, slo, self.right_step)
        self.timeline.append({
            "t_s": time.monotonic() - self.t0, "ours": _key(ours), "right": _key(theirs),
            "factors": {w.worker_id.rsplit(":", 1)[-1]: w.prefill_cost_factor for w in snap.workers},
        })  # fmt: skip
        return route


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sglang_ppd.cli", "emulate", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with s.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never became healthy")


async def run_arm(off_by: float, correct: bool, duration_s: float, seed: int) -> dict[str, Any]:
    base = free_block(8)
    procs: list[asyncio.subprocess.Process] = []
    workers: list[dict[str, Any]] = []
    for i in range(2):
        port, boot = base + 2 * i, base + 2 * i + 1
        procs.append(await _spawn("--role", "prefill", "--port", str(port), "--bootstrap-port", str(boot),
                                  "--page-size", "16"))  # fmt: skip
        workers.append({"url": f"http://127.0.0.1:{port}", "role": "prefill", "bootstrap_port": boot})
    for i in range(2):
        port = base + 4 + i
        procs.append(await _spawn("--role", "decode", "--port", str(port), "--ppd", "--page-size", "16",
                                  "--tbt-budget-ms", str(SLO.tpot_ms)))  # fmt: skip
        workers.append({"url": f"http://127.0.0.1:{port}", "role": "decode"})
    try:
        for w in workers:
            await _healthy(w["url"])
        right_profile = load_profile(DEFAULT_PROFILE)
        wrong_profile = prefill_off_by(right_profile, off_by) if off_by != 1.0 else right_profile
        policy = Shadowed(load_policy(POLICY, {}, wrong_profile), load_policy(POLICY, {}, right_profile),
                          time.monotonic())  # fmt: skip
        cfg = RouterConfig.model_validate({
            "port": 0, "workers": workers, "self_correct": correct,
            "slo": {"ttft_ms": SLO.ttft_ms, "tpot_ms": SLO.tpot_ms},
        })  # fmt: skip
        router = Router(cfg, policy, wrong_profile, ByteTokenizer(), POLICY)
        runner, port = await start_server(router, "127.0.0.1", 0)
        try:
            await asyncio.sleep(1.0)  # first telemetry
            policy.t0 = time.monotonic()
            workload = load_workload(spec=WORKLOAD, seed=seed)
            opts = BenchOptions(url=f"http://127.0.0.1:{port}", seed=seed, duration_s=duration_s)
            result = await Replay(opts).run(workload)
        finally:
            await runner.cleanup()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(p.wait(), 15)
            if p.returncode is None:
                p.kill()
                await p.wait()
    return {"prefill_off_by": off_by, "self_correct": correct, "num_requests": len(result.records),
            "timeline": policy.timeline,
            "worker_roles": {w["url"].rsplit(":", 1)[-1]: w["role"] for w in workers}}  # fmt: skip


def windows(
    timeline: list[dict[str, Any]], roles: dict[str, str], window_s: float, off_by: float, until_s: float
) -> list[dict[str, Any]]:
    """Per window: the share of decisions equal to the right profile's, the local shares, and the
    mean learned factor per role at the window's last decision, also as the price it implies
    relative to the right profile (``off_by`` x factor: 1.0 is the right profile's price)."""
    out: list[dict[str, Any]] = []
    if not timeline:
        return out
    end = until_s
    k = 0
    while (k + 1) * window_s <= end + 1e-9:  # whole windows while the replay was still sending
        lo, hi = k * window_s, (k + 1) * window_s
        es = [e for e in timeline if lo <= e["t_s"] < hi]
        if es:
            last = es[-1]["factors"]
            mean = {}
            for role in ("prefill", "decode"):
                fs = [f for w, f in last.items() if roles.get(w) == role]
                mean[role] = sum(fs) / len(fs) if fs else 1.0
            out.append({
                "t_end_s": hi, "num_decisions": len(es),
                "agreement": sum(e["ours"] == e["right"] for e in es) / len(es),
                "local_share_ours": sum(e["ours"] != "pd" for e in es) / len(es),
                "local_share_right": sum(e["right"] != "pd" for e in es) / len(es),
                "prefill_factor_p": mean["prefill"], "prefill_factor_d": mean["decode"],
                "price_p": off_by * mean["prefill"], "price_d": off_by * mean["decode"],
            })  # fmt: skip
        k += 1
    return out


def plot(arms: dict[str, dict[str, Any]], path: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, arm in arms.items():
        ws = arm["windows"]
        a.plot([w["t_end_s"] for w in ws], [w["agreement"] for w in ws], marker="o", label=name)
    a.set_xlabel("seconds of traffic")
    a.set_ylabel("share of decisions equal to the right profile's")
    a.set_ylim(0, 1.05)
    a.set_title("decisions vs the right profile's (uncorrected)")
    a.legend(fontsize=8)
    for name, arm in arms.items():
        if not arm["self_correct"]:
            continue
        ws = arm["windows"]
        for key, role, style in (("price_p", "P", "-"), ("price_d", "D", "--")):
            # At t = 0 no factor is learned yet: the price is the profile's own.
            xs, ys = [0.0] + [w["t_end_s"] for w in ws], [arm["prefill_off_by"]] + [w[key] for w in ws]
            b.plot(xs, ys, style, marker="o", label=f"{name}: {role}")
    b.axhline(1.0, color="grey", linestyle=":", label="the right profile's price")
    b.set_xlabel("seconds of traffic")
    b.set_ylabel("learned prefill price / right profile's")
    b.set_title("profile x learned factor, per role")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=150.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window-s", type=float, default=15.0)
    args = ap.parse_args(argv)
    arms: dict[str, dict[str, Any]] = {}
    for name, off_by, correct in ARMS:
        arm = asyncio.run(run_arm(off_by, correct, args.duration_s, args.seed))
        arm["windows"] = windows(arm["timeline"], arm["worker_roles"], args.window_s, off_by, args.duration_s)
        arms[name] = arm
        for w in arm["windows"]:
            print(f"{name:12} t<{w['t_end_s']:5.0f}s n={w['num_decisions']:4d} agree={w['agreement']:.2f} "
                  f"local ours/right={w['local_share_ours']:.2f}/{w['local_share_right']:.2f} "
                  f"factor P/D={w['prefill_factor_p']:.2f}/{w['prefill_factor_d']:.2f} "
                  f"price P/D={w['price_p']:.2f}/{w['price_d']:.2f}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "self_correction.png"
    plot(arms, png)
    write_result_json(RESULTS / "self_correction.json", {
        "command": "python benchmarks/self_correction.py " + " ".join(argv or sys.argv[1:]),
        "seed": args.seed, "duration_s": args.duration_s, "window_s": args.window_s, "workload": WORKLOAD,
        "slo": {"ttft_ms": SLO.ttft_ms, "tpot_ms": SLO.tpot_ms}, "policy": POLICY,
        "arms": {k: {kk: vv for kk, vv in v.items() if kk != "timeline"} for k, v in arms.items()},
        "machine": machine_info(),
    })  # fmt: skip
    print(f"wrote {png} and {RESULTS / 'self_correction.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
