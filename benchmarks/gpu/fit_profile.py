"""Fit a cost profile from a validate_ppd.sh run, and measure the cost model's and simulator's error.

usage: python benchmarks/gpu/fit_profile.py RUN_DIR --model 8b|886m --name NAME [--write-profile]

RUN_DIR holds what one device call returned (results.json, extras.json, iter.jsonl.gz,
validate.log). Writes benchmarks/results/gpu_ppd_fit_<model>.json and, with --write-profile,
configs/profiles/<NAME>.yaml.

The iteration log times each scheduler iteration by the interval between two scheduling calls
(sglang_ppd.worker.budget.IterationClock). At a switch between decode-only and mixed batches the
overlap scheduler can shift a few ms of CPU work (request intake, batch build) onto the neighbour,
so mixed iterations are fitted as *runs*: each maximal sequence of prefill-carrying iterations
plus one decode iteration on either side, whose summed time is what the resident decodes lose.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics as st
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sglang_ppd.core.costmodel import CostProfile, load_profile  # noqa: E402
from sglang_ppd.core.types import Slo  # noqa: E402
from sglang_ppd.sim.config import SimConfig  # noqa: E402
from sglang_ppd.sim.run import simulate  # noqa: E402
from sglang_ppd.workload.spec import TurnSpec  # noqa: E402

SHAPES = {
    "8b": {"num_layers": 32, "num_kv_heads": 8, "head_dim": 128, "dtype_bytes": 2},
    "886m": {"num_layers": 16, "num_kv_heads": 8, "head_dim": 128, "dtype_bytes": 2},
}
MODELS = {
    "8b": "Llama-3.1-8B shape (32 layers, 8 KV heads, head_dim 128, bf16), random weights",
    "886m": "886M Llama (hidden 2048, 16 layers, 8 KV heads, head_dim 128, bf16), random weights",
}
LOOPBACK_TCP_GB_S = 1.3  # Mooncake over loopback TCP, measured in shared/gpu/README.md (1.2-1.4 GB/s)


def pf_features(row: dict[str, Any]) -> tuple[int, float, float, float]:
    chunks = [(n, k) for n, k in row.get("chunks", []) if n > 0]
    return (
        1 if chunks else 0,
        float(sum(n for n, _ in chunks)),
        float(sum(n * (k + n / 2) for n, k in chunks)),
        float(sum(k for _, k in chunks)),
    )


def segments(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(isolated decode-only rows, runs of prefill-carrying rows with one decode row each side)."""
    runs: list[list[dict[str, Any]]] = []
    in_run: set[int] = set()
    i = 0
    while i < len(rows):
        if rows[i]["kind"] == "decode":
            i += 1
            continue
        j = i + 1
        while j < len(rows) and rows[j]["kind"] != "decode" and rows[j]["t"] - rows[j - 1]["t"] < 1.0:
            j += 1
        lo = (
            i - 1
            if i > 0 and rows[i - 1]["kind"] == "decode" and rows[i]["t"] - rows[i - 1]["t"] < 1.0
            else i
        )
        hi = (
            j + 1
            if j < len(rows) and rows[j]["kind"] == "decode" and rows[j]["t"] - rows[j - 1]["t"] < 1.0
            else j
        )
        runs.append(rows[lo:hi])
        in_run.update(range(lo, hi))
        i = j
    decodes = [
        r for k, r in enumerate(rows) if k not in in_run and r["kind"] == "decode" and r["num_decodes"] > 0
    ]
    return decodes, runs


def _nnls_rel(a: np.ndarray, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (rows divided by the measured time)."""
    coef, _ = nnls((a / scale) / y[:, None], np.ones_like(y))
    return np.asarray(coef / scale)


def fit_decode(decodes: list[dict[str, Any]], key: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """decode_base, c_batch, c_kv >= 0; iterations over 1.5x the first fit (request intake or a
    stall inside the interval) are dropped once and the fit repeated."""
    feats = np.array([[1.0, r["num_decodes"], r["ctx_tokens"]] for r in decodes])
    y = np.array([r[key] for r in decodes])
    scale = np.array([1.0, 1e-2, 1e-5])
    coef = _nnls_rel(feats, y, scale)
    keep = feats @ coef * 1.5 >= y
    coef = _nnls_rel(feats[keep], y[keep], scale)
    return coef, [r for r, k in zip(decodes, keep, strict=True) if k]


def fit_prefill(
    rows: list[dict[str, Any]], dcoef: np.ndarray, key: str
) -> tuple[np.ndarray, list[float], list[float]]:
    """prefill_base, c_pf, c_attn, c_ctx >= 0 per prefill-carrying iteration, its decodes' share
    (c_batch, c_kv; no decode base: the mixed iteration has the prefill base) taken out first."""
    pf = [r for r in rows if r["kind"] != "decode" and pf_features(r)[0]]
    a = np.array([pf_features(r) for r in pf], dtype=float)
    dec = np.array([dcoef[1] * r["num_decodes"] + dcoef[2] * r["ctx_tokens"] for r in pf])
    y = np.array([r[key] for r in pf])
    scale = np.array([1.0, 1e-3, 1e-7, 1e-4])
    coef, _ = nnls((a / scale) / y[:, None], 1.0 - dec / y)
    coef = coef / scale
    keep = (a @ coef + dec) * 1.5 >= y
    coef, _ = nnls((a[keep] / scale) / y[keep, None], 1.0 - dec[keep] / y[keep])
    coef = coef / scale
    return coef, list(a @ coef + dec), list(y)


def fit_runs_error(runs: list[list[dict[str, Any]]], prof: CostProfile) -> tuple[list[float], list[float]]:
    """Predicted and measured summed time of each run (one decode iteration either side included)."""
    pred = [
        sum(
            prof.iteration_ms([tuple(c) for c in r.get("chunks", [])], r["num_decodes"], r["ctx_tokens"])
            for r in run
        )
        for run in runs
    ]
    return pred, [sum(r["iter_ms"] for r in run) for run in runs]


def rel_errors(pred: list[float], meas: list[float]) -> list[float]:
    return [abs(p - m) / m for p, m in zip(pred, meas, strict=True) if m > 0]


def summary(errs: list[float]) -> dict[str, float | int]:
    if not errs:
        return {"n": 0}
    s = sorted(errs)
    return {"n": len(s), "median": round(st.median(s), 4), "p90": round(s[int(0.9 * (len(s) - 1))], 4)}


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
    for rec in outcome.records:
        m = recs.get(rec.request_id)
        if m is None or rec.ttft_ms is None:
            continue
        for key, sim_v, real_v in (
            ("ttft", rec.ttft_ms + floor_ms, m["ttft_ms"]),
            ("tpot", rec.tpot_ms, m["tpot_ms"]),
        ):
            if sim_v is not None and real_v:
                for grp in ("all", str(m["route"])):
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--model", choices=sorted(SHAPES), required=True)
    ap.add_argument("--name", required=True, help="profile name (configs/profiles/<name>.yaml)")
    ap.add_argument("--slo-ms", type=float, required=True, help="the run's --ppd-tbt-slo-ms")
    ap.add_argument("--reference-profile", default=None, help="also run the simulator with this profile")
    ap.add_argument("--write-profile", action="store_true")
    a = ap.parse_args()
    run = Path(a.run_dir)
    with gzip.open(run / "iter.jsonl.gz") as f:
        rows = [json.loads(x) for x in f]
    wall = [r for r in rows if r.get("row") != "gpu"]
    gpu_rows = [r for r in rows if r.get("row") == "gpu"]
    res = json.loads((run / "results.json").read_text())
    extras = json.loads((run / "extras.json").read_text())
    gpu = (run / "validate.log").read_text().splitlines()[1].split(",")[0].strip()
    kv_tokens = int(extras["server_info_D"]["max_total_num_tokens"])

    decodes = [r for r in gpu_rows if r["kind"] == "decode" and r["num_decodes"] > 0]
    dcoef, kept = fit_decode(decodes, "gpu_ms")
    pcoef, pf_pred, pf_meas = fit_prefill(gpu_rows, dcoef, "gpu_ms")
    step = {
        "prefill_base_ms": pcoef[0],
        "decode_base_ms": dcoef[0],
        "c_pf_ms": pcoef[1],
        "c_attn_ms": pcoef[2],
        "c_ctx_ms": pcoef[3],
        "c_batch_ms": dcoef[1],
        "c_kv_ms": dcoef[2],
    }
    step = {k: float(f"{float(v):.6g}") for k, v in step.items()}
    dpred = [
        step["decode_base_ms"] + step["c_batch_ms"] * r["num_decodes"] + step["c_kv_ms"] * r["ctx_tokens"]
        for r in decodes
    ]
    derr, pferr = rel_errors(dpred, [r["gpu_ms"] for r in decodes]), rel_errors(pf_pred, pf_meas)
    prof_dict: dict[str, Any] = {
        "name": a.name,
        "gpu": gpu,
        "model": MODELS[a.model],
        "provenance": "",
        "shape": SHAPES[a.model],
        "step": step,
        "kv_capacity_tokens": kv_tokens,
        "chunked_prefill_size": 8192,
        "max_running_requests": 2048,
        "page_size": 1,
        "transfer_setup_ms": 0.0,
    }
    prof = CostProfile.model_validate(prof_dict)
    direct_floor = request_floor_ms(res, gpu_rows)
    path_floor = router_floor_ms(res, gpu_rows)
    floor = path_floor if path_floor is not None else (direct_floor or 0.0)
    transfer = fit_transfer(res, prof, floor)
    link = (transfer or {}).get("gbytes_per_s") or LOOPBACK_TCP_GB_S
    prof_dict["transfer_setup_ms"] = (transfer or {}).get("setup_ms", 0.0)
    prof_dict["provenance"] = (
        f"Fitted by benchmarks/gpu/fit_profile.py from CUDA-event forward times that the decode "
        f"server logs itself (sglang_ppd.worker --ppd-iter-log) in one benchmarks/gpu/validate_ppd.sh "
        f"call on {gpu}, {res['date'][:10]}, SGLang 0.5.17, triton attention, decode CUDA graphs, P and D "
        f"sharing the GPU. "
        f"Decode: non-negative relative-error fit over {len(kept)} decode-only forwards (median rel err "
        f"{summary(derr).get('median')}). Prefill/mixed: the same over {len(pf_meas)} prefill-carrying "
        f"forwards, their decodes' share removed (median rel err {summary(pferr).get('median')}). "
        f"GPU forward times exclude HTTP, tokenizer and scheduling "
        f"(~{floor:.0f} ms per request here, reported apart), "
        f"unlike the "
        f"idle-HTTP fit of h100-llama31-8b. Transfer: Mooncake over loopback TCP from single PD requests "
        f"(setup {prof_dict['transfer_setup_ms']} ms, {link} GB/s): not RDMA. KV capacity: this D server."
    )
    prof = CostProfile.model_validate(prof_dict)
    prof_path = ROOT / "configs" / "profiles" / f"{a.name}.yaml"
    if a.write_profile:
        header = f"# {a.name}: fitted from a real SGLang 0.5.17 run; see provenance and benchmarks/gpu.md.\n"
        prof_path.write_text(header + yaml.safe_dump(prof_dict, sort_keys=False, width=100))
    decodes_w, runs = segments(wall)
    run_pred, run_meas = fit_runs_error(runs, prof)
    out: dict[str, Any] = {
        "run_dir": str(run),
        "model": a.model,
        "gpu": gpu,
        "date": res["date"],
        "sglang": "0.5.17",
        "machine": res["machine"],
        "seed": res["seed"],
        "profile": prof_dict,
        "request_floor_ms": floor,
        "floor_direct_nonstreaming_ms": direct_floor,
        "floor_router_streaming_ms": path_floor,
        "transfer": transfer,
        "fit": {
            "decode_forwards": len(decodes),
            "decode_kept": len(kept),
            "prefill_forwards": len(pf_meas),
            "decode_rel_err": summary(derr),
            "prefill_rel_err": summary(pferr),
            "wall_runs": len(runs),
            "wall_run_rel_err": summary(rel_errors(run_pred, run_meas)),
            "wall_run_underprediction_ms_median": round(
                st.median([m - p for p, m in zip(run_pred, run_meas, strict=True)]), 2
            ),
        },
        "premise": premise(res, wall, gpu_rows, prof),
        "sim_vs_real": {},
    }
    if a.write_profile:
        out["sim_vs_real"]["fitted"] = sim_compare(res, str(prof_path), a.slo_ms, kv_tokens, link, floor)
    if a.reference_profile:
        out["sim_vs_real"]["reference"] = sim_compare(
            res, a.reference_profile, a.slo_ms, kv_tokens, link, 0.0
        )
        out["premise_reference_profile"] = premise(res, wall, gpu_rows, load_profile(a.reference_profile))
    dest = ROOT / "benchmarks" / "results" / f"gpu_ppd_fit_{a.model}.json"
    dest.write_text(json.dumps(out, indent=1))
    print(
        json.dumps(
            {k: out[k] for k in ("fit", "request_floor_ms", "transfer", "premise", "sim_vs_real")}, indent=1
        )
    )


if __name__ == "__main__":
    main()
