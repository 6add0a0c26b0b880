"""Checks of a fitted profile against a validate_ppd.sh run: the premise (phase d), the request-path
floor, the KV transfer line, and the simulator replaying phase e's exact turns.

Used by fit_profile.py; no GPU needed.
"""

from __future__ import annotations

import math
import statistics as st
from typing import Any

import numpy as np
from nnls import nnls

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.types import Slo
from sglang_ppd.sim.config import SimConfig
from sglang_ppd.sim.run import simulate
from sglang_ppd.workload.spec import TurnSpec


def summary(errs: list[float]) -> dict[str, float | int]:
    if not errs:
        return {"n": 0}
    s = sorted(errs)
    return {"n": len(s), "median": round(st.median(s), 4), "p90": round(s[math.ceil(0.9 * len(s)) - 1], 4)}


def _stall(win: list[dict[str, Any]], key: str, base: float) -> float:
    return round(sum(r[key] for r in win) - len(win) * base, 1)


def _decode_base(rows: list[dict[str, Any]], key: str, t0: float, t1: float) -> float | None:
    xs = [r[key] for r in rows if t0 <= r["t"] <= t1 and r["kind"] == "decode" and r["num_decodes"] == 32]
    return st.median(xs) if xs else None


def premise(
    res: dict[str, Any], wall: list[dict[str, Any]], gpu: list[dict[str, Any]], prof: CostProfile
) -> dict[str, Any]:
    """Phase d: what each injection cost the 32 resident decodes: wall (what they saw), GPU forward
    time, and the cost model's prediction over the same iterations."""
    out: dict[str, Any] = {}
    for name, rnd in res.get("d", {}).items():
        if not isinstance(rnd, dict) or "decoders" not in rnd:
            continue
        decs = rnd["decoders"]
        t0, t1 = min(x["t_send"] for x in decs), max(x["t_done"] for x in decs)

        bw, bg = _decode_base(wall, "iter_ms", t0, t1), _decode_base(gpu, "gpu_ms", t0, t1)
        entry: dict[str, Any] = {
            "decode_only_tpot_wall_ms": bw and round(bw, 3),
            "decode_only_gpu_ms": bg and round(bg, 3),
            "mean_e2e_per_token_ms": round(rnd["mean_e2e_per_token_ms"], 3),
        }
        inj = rnd.get("injection")
        tag = f"val-inj-{name}"
        iw = [k for k, r in enumerate(wall) if tag in r.get("rids", [])]
        ig = [r for r in gpu if tag in r.get("rids", [])]
        if inj and bw and bg and iw and ig:
            lo, hi = max(iw[0] - 1, 0), min(iw[-1] + 1, len(wall) - 1)
            win = wall[lo : hi + 1]
            total_w = sum(r["iter_ms"] for r in win)
            pred = [
                prof.iteration_ms([tuple(c) for c in r["chunks"]], r["num_decodes"], r["ctx_tokens"])
                for r in ig
            ]
            pbase = prof.iteration_ms([], 32, ig[0]["ctx_tokens"])
            entry.update(
                injection_ttft_ms=round(inj["e2e_ms"], 1),
                injection_cached_tokens=inj["cached_tokens"],
                chunks=[c for r in ig for c in r["chunks"]],
                mixed_iterations=len(ig),
                mixed_gpu_ms=[round(r["gpu_ms"], 2) for r in ig],
                mixed_model_ms=[round(x, 2) for x in pred],
                stall_gpu_ms=_stall(ig, "gpu_ms", bg),
                stall_model_ms=round(sum(pred) - len(ig) * pbase, 1),
                wall_window_iterations=len(win),
                tpot_during_wall_ms=round(total_w / len(win), 2),
                max_iteration_wall_ms=round(max(r["iter_ms"] for r in win), 2),
                stall_wall_ms=_stall(win, "iter_ms", bw),
            )
        out[name] = entry
    return out


def request_floor_ms(res: dict[str, Any], gpu: list[dict[str, Any]]) -> float | None:
    """Client-visible time of a one-token request beyond its forward pass (HTTP, tokenizer manager,
    scheduling, detokenizer): the history refresh of phase d, 1 new token on a cached prefix."""
    refresh = res.get("d", {}).get("history_refresh")
    rows = [r for r in gpu if "val-refresh" in r.get("rids", [])]
    if not refresh or not rows:
        return None
    return round(refresh["e2e_ms"] - rows[0]["gpu_ms"], 2)


def router_floor_ms(res: dict[str, Any], gpu: list[dict[str, Any]]) -> float | None:
    """The same floor on phase e's path (router, streaming): phase a3's one-token turns on an idle D,
    TTFT minus the forward that computed them (found by prompt length and send time)."""
    floors = []
    for p in res.get("ab", {}).get("floor_probes") or []:
        rows = [
            r
            for r in gpu
            if r["kind"] != "decode"
            and r["t"] >= p["t_send"]
            and any(c[0] + c[1] == p["prompt_len"] for c in r["chunks"])
        ]
        if rows and p.get("ttft_ms"):
            floors.append(p["ttft_ms"] - rows[0]["gpu_ms"])
    return round(st.median(floors), 2) if floors else None


def fit_transfer(res: dict[str, Any], prof: CostProfile, floor_ms: float) -> dict[str, Any] | None:
    """setup + bytes/bandwidth from single PD requests (phase a2): TTFT minus P's prefill and the floor."""
    cal = res.get("ab", {}).get("pd_calibration") or []
    pts = [(c["prompt_len"], c["ttft_ms"]) for c in cal if c.get("ttft_ms") and c.get("route") == "pd"]
    if len(pts) < 2:
        return None
    x = np.array([n * prof.kv_bytes_per_token for n, _ in pts], dtype=float)
    y = np.array([t - floor_ms - prof.prefill_ms(n, 0) for n, t in pts])
    coef, _ = nnls(np.stack([np.ones_like(x), x / 1e9], axis=1), y)
    setup_ms, ms_per_gb = float(coef[0]), float(coef[1])
    return {
        "points": [{"prompt_len": n, "ttft_ms": round(t, 1)} for n, t in pts],
        "setup_ms": round(setup_ms, 2),
        "gbytes_per_s": round(1000.0 / ms_per_gb, 3) if ms_per_gb > 0 else None,
    }


def sim_compare(
    res: dict[str, Any], profile_path: str, slo_ms: float, kv_tokens: int, link_gb_s: float, floor_ms: float
) -> dict[str, Any]:
    """Replays phase e's exact turns in the simulator (1P1D, always_local) and compares per request.
    The simulator times compute and transfer only, so the measured per-request floor is added."""
    e = res.get("e", {})
    recs = {f"{r['session_id']}#{r['turn']}": r for r in e.get("records", [])}
    specs = []
    for sess in e.get("sessions", []):
        hist = 0
        for k, (new_len, out_len) in enumerate(sess["turns"], start=1):
            specs.append(
                TurnSpec(
                    session_id=sess["id"],
                    turn=k,
                    input_len=hist + new_len,
                    output_len=out_len,
                    history_len=hist,
                    arrival_s=sess["arrival_s"] if k == 1 else None,
                    think_time_s=0.0 if k == 1 else e["think_s"],
                )
            )
            hist += new_len + out_len
    cfg = SimConfig(
        num_prefill=1,
        num_decode=1,
        profile=profile_path,
        link_gbytes_per_s=link_gb_s,
        tbt_budget_ms=slo_ms,
        min_chunk_len=128,
        kv_capacity_tokens=kv_tokens,
    )
    _, outcome = simulate(specs, "always_local", slo=Slo(), config=cfg, seed=0)
    errs: dict[str, dict[str, list[float]]] = {"all": {"ttft": [], "tpot": []}}
    pd_spans = [(r["t_send"], r["t_send"] + r["ttft_ms"] / 1000) for r in recs.values() if r["route"] == "pd"]
    for rec in outcome.records:
        m = recs.get(rec.request_id)
        if m is None or rec.ttft_ms is None:
            continue
        # On this one-GPU testbed a PD request in flight (P prefilling, KV copied over loopback TCP)
        # shares the GPU and CPU with D, which the simulator's separate workers do not model.
        lo, hi = m["t_send"], m["t_send"] + m["ttft_ms"] / 1000
        alone = not any(a < hi and b > lo for a, b in pd_spans if (a, b) != (lo, hi))
        for key, sim_v, real_v in (
            ("ttft", rec.ttft_ms + floor_ms, m["ttft_ms"]),
            ("tpot", rec.tpot_ms, m["tpot_ms"]),
        ):
            if sim_v is not None and real_v:
                groups = ["all", str(m["route"])] + ([f"{m['route']}_no_pd_in_flight"] if alone else [])
                for grp in groups:
                    errs.setdefault(grp, {"ttft": [], "tpot": []})[key].append(abs(sim_v - real_v) / real_v)
    sim_ttft = [r.ttft_ms + floor_ms for r in outcome.records if r.ttft_ms is not None]
    sim_tpot = [r.tpot_ms for r in outcome.records if r.tpot_ms is not None]
    return {
        "profile": profile_path,
        "link_gbytes_per_s": link_gb_s,
        "request_floor_ms": floor_ms,
        "rel_err": {g: {k: summary(v) for k, v in d.items()} for g, d in errs.items()},
        "real_medians_ms": {
            k: round(st.median([m[f"{k}_ms"] for m in recs.values() if m[f"{k}_ms"]]), 2)
            for k in ("ttft", "tpot")
        },
        "sim_medians_ms": {"ttft": round(st.median(sim_ttft), 2), "tpot": round(st.median(sim_tpot), 2)},
    }
