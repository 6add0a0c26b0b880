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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nnls import nnls  # noqa: E402
from sim_check import (  # noqa: E402
    fit_transfer,
    premise,
    request_floor_ms,
    router_floor_ms,
    sim_compare,
    summary,
)

from sglang_ppd.core.costmodel import CostProfile, load_profile  # noqa: E402

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
