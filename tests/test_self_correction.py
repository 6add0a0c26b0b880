"""Self-correction from traffic (``core.correction``): the bounded residual, its path into the
policy through the snapshot, and the router learning it from an emulated cluster's real TTFTs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import aiohttp
import pytest
from sglang_ppd_policies.estimate import Estimator
from test_policies_fixtures import PROFILE, SLO, dw, pw, req, snap
from test_router_emulated import _spawn
from test_router_support import free_port, stop_process, wait_until_healthy

from sglang_ppd.core.correction import MAX_FACTOR, MIN_FACTOR, Prediction, Residual, predict_ttft
from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.policy import load_policy
from sglang_ppd.core.stepmodel import StepModel
from sglang_ppd.core.types import ChunkPlan, Route, RouteKind
from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer


def prefill_off_by(factor: float) -> CostProfile:
    """The default profile with every prefill coefficient ``factor`` times too large."""
    s = PROFILE.step
    names = ("prefill_base_ms", "c_pf_ms", "c_attn_ms", "c_ctx_ms")
    step = s.model_copy(update={k: getattr(s, k) * factor for k in names})
    return PROFILE.model_copy(update={"name": f"{PROFILE.name}-prefill-x{factor}", "step": step})


def test_the_residual_converges_to_the_ratio_and_stays_bounded() -> None:
    r = Residual()
    pred = Prediction("p0", prefill_ms=100.0, other_ms=10.0)
    for _ in range(60):
        r.update(pred, 10.0 + 50.0)  # the prefill took half the predicted time
    assert r.factor == pytest.approx(0.5, rel=0.02) and r.num_samples == 60
    for _ in range(200):
        r.update(pred, 1e9)  # a stuck request, over and over: clamped
    assert r.factor == pytest.approx(MAX_FACTOR)
    for _ in range(200):
        r.update(pred, 1.0)  # faster than the rest of the path: clamped below
    assert r.factor == pytest.approx(MIN_FACTOR)
    before = r.num_samples
    for bad in (math.nan, math.inf, -5.0, 0.0):
        r.update(pred, bad)
    r.update(Prediction("p0", 1.0, 0.0), 50.0)  # too small a prediction to measure against
    assert r.num_samples == before and r.num_dropped == 5


def test_the_factor_reaches_the_estimates_through_the_snapshot() -> None:
    est = Estimator(PROFILE)
    p, d = pw("p0", queued=8000), dw("d0", running=8, ctx_per_req=1000)
    half_p = dataclasses.replace(p, prefill_cost_factor=0.5)
    assert est.p_queue_ms(half_p, True, 2000) == pytest.approx(0.5 * est.p_queue_ms(p, True, 2000))
    extra = est.decode_step_ms(d, True, 3000) - est.dec_base_ms
    assert est.max_chunk_len(3000, extra, 40.0, 0.5) > est.max_chunk_len(3000, extra, 40.0)
    # A decision the wrong profile gets wrong, corrected by the factor: with prefill 2x too
    # expensive the 25 ms TBT seems to leave no room for the append; measured at 0.5, it does.
    wrong = load_policy("ppd", {}, prefill_off_by(2.0))
    right = load_policy("ppd", {}, PROFILE)
    slo = dataclasses.replace(SLO, tpot_ms=25.0)
    r = req(1500, d0=1400)
    d1 = dw("d0", running=4, ctx_per_req=600)
    assert right.decide(r, snap(p, d1), slo).kind is RouteKind.LOCAL
    assert wrong.decide(r, snap(p, d1), slo).kind is RouteKind.PD
    corrected = snap(half_p, dataclasses.replace(d1, prefill_cost_factor=0.5))
    assert wrong.decide(r, corrected, slo).kind is RouteKind.LOCAL


def test_predictions_split_prefill_work_from_the_rest() -> None:
    m = StepModel.of(PROFILE)
    r = req(3000, p0=1000, d0=2000)
    cs = snap(pw("p0", queued=0), dw("d0", running=0))
    kv = PROFILE.kv_bytes_per_token
    pd = predict_ttft(Route(RouteKind.PD, "d0", prefill_worker="p0"), r, cs, SLO, m, kv)
    assert pd is not None and pd.worker_id == "p0"
    assert pd.prefill_ms == pytest.approx(PROFILE.prefill_ms(2000, 1000))
    assert pd.other_ms > 0  # the transfer of 1000 tokens and one decode step
    local = Route(RouteKind.LOCAL, "d0", chunk_plan=ChunkPlan(1000, 1))
    lp = predict_ttft(local, r, cs, SLO, m, PROFILE.kv_bytes_per_token)
    assert lp is not None and lp.worker_id == "d0" and lp.other_ms == 0.0
    assert lp.prefill_ms == pytest.approx(PROFILE.prefill_ms(1000, 2000))
    gone = Route(RouteKind.PD, "d9", prefill_worker="p0")
    assert predict_ttft(gone, r, cs, SLO, m, PROFILE.kv_bytes_per_token) is None


async def _learned_factor(
    purl: str, bport: int, durl: str, profile: CostProfile, salt: int, num: int = 20
) -> dict[str, Any]:
    """A router with ``profile`` and ``self_correct`` sends ``num`` streamed 3000-token prompts that
    share no prefix (with each other, or with another ``salt``'s): its P worker's correction."""
    cfg = RouterConfig.model_validate({
        "port": 0, "self_correct": True,
        "workers": [{"url": purl, "role": "prefill", "bootstrap_port": bport},
                    {"url": durl, "role": "decode"}],
    })  # fmt: skip
    router = Router(cfg, load_policy("pd", {}, profile), profile, ByteTokenizer(), "pd")
    runner, port = await start_server(router, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(num):
                ids = [1 + (salt + i * 7 + j) % 250 for j in range(3000)]
                body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 2}, "stream": True}
                async with s.post(f"http://127.0.0.1:{port}/generate", json=body) as r:
                    assert r.status == 200
                    await r.read()
            stats = await (await s.get(f"http://127.0.0.1:{port}/stats")).json()
    finally:
        await runner.cleanup()
    return next(w for w in stats["workers"] if w["role"] == "prefill")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_router_learns_which_way_its_prefill_profile_is_off() -> None:
    """Real time on a shared machine only adds to a TTFT, so the test asserts the direction with a
    margin, not the value: a profile 2x too slow learns a factor well below 1, one 2x too fast
    well above (``benchmarks/self_correction.py`` measures the convergence itself)."""
    pport, bport, dport = free_port(), free_port(), free_port()
    p = await _spawn("emulate", "--role", "prefill", "--port", str(pport), "--bootstrap-port", str(bport))
    d = await _spawn("emulate", "--role", "decode", "--port", str(dport))
    purl, durl = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{dport}"
    try:
        await wait_until_healthy(purl, p)
        await wait_until_healthy(durl, d)
        slow = await _learned_factor(purl, bport, durl, prefill_off_by(2.0), salt=0)
        fast = await _learned_factor(purl, bport, durl, prefill_off_by(0.5), salt=3)
    finally:
        await stop_process(p)
        await stop_process(d)
    assert slow["correction_samples"] == fast["correction_samples"] == 20
    assert slow["prefill_cost_factor"] < 0.9 and fast["prefill_cost_factor"] > 1.3, (slow, fast)
