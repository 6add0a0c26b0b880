"""``cluster_2p2d.py collect``: the simulator on the live runs' workloads, and the live-vs-sim table.

Runs here (CPU), on the files a device call brought back: the simulator on the same workloads and
loads (2P2D, the fitted profile, the cluster's measured KV capacity, the single-GPU Mooncake TCP
bandwidth), restricted like the live run to requests that arrived inside the load window; the
table of live vs sim and the relative error. Usage: see ``cluster_2p2d.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def sim_for(rec: dict[str, Any], profile: str, kv_capacity: int | None, link_gbs: float, seed: int,
            tbt_ms: float) -> dict[str, Any]:  # fmt: skip
    from sglang_ppd.core.types import Slo
    from sglang_ppd.metrics.summary import summarize
    from sglang_ppd.sim.config import SimConfig
    from sglang_ppd.sim.run import simulate
    from sglang_ppd.workload import load_workload

    cfg: dict[str, Any] = {
        "num_prefill": 2,
        "num_decode": 2,
        "profile": profile,
        "link_gbytes_per_s": link_gbs,
        "tbt_budget_ms": tbt_ms,
        "min_chunk_len": 128,
        "kv_capacity_tokens": kv_capacity,
        "decode_cache": True,
    }  # the live D servers kept their radix cache in every run
    config = SimConfig.model_validate(cfg)
    workload = load_workload(spec=rec["spec"], seed=seed, rate_scale=rec["load"])
    policy = "pd_cache_aware" if rec["router"] == "rust" else rec["router"]
    slo = Slo()
    _, outcome = simulate(workload, policy, slo=slo, config=config, seed=seed)
    window = [r for r in outcome.records if r.arrival_s < rec["duration_s"]]
    span = max((r.finish_s or r.arrival_s for r in window), default=0.0)
    kv_per_token = 2 * 32 * 8 * 128 * 2  # Llama-3.1-8B shape, bf16: 128 KiB of K+V per token
    prompt_bytes = sum(r.input_len for r in window) * kv_per_token
    return summarize(
        window,
        slo=slo,
        wall_s=span,
        policy=policy,
        seed=seed,
        mode="sim",
        link_bytes_all=outcome.link_bytes,
        prompt_kv_bytes_window=prompt_bytes,
    )


def cmd_collect(a: argparse.Namespace) -> int:
    from sglang_ppd.metrics.result import machine_info, write_result_json

    src = Path(a.dir)
    recs = [json.loads(x) for x in (src / "runs.jsonl").read_text().splitlines() if x.strip()]
    extras = json.loads((src / "extras.json").read_text()) if (src / "extras.json").exists() else {}
    kv_cap = a.kv_capacity or extras.get("kv_capacity_tokens")
    rows = []
    for rec in recs:
        path = src / "runs" / f"{rec['tag']}.json"
        if not path.exists():
            err = f"no result (router_ok {rec.get('router_ok')}, rc {rec.get('bench_rc')})"
            rows.append({"tag": rec["tag"], "router": rec["router"], "workload": rec["workload"],
                         "load": rec["load"], "error": err})  # fmt: skip
            continue
        live = json.loads(path.read_text())
        sim = sim_for(rec, a.profile, kv_cap, a.link_gbs, a.seed, a.tbt_ms)
        write_result_json(Path(a.out_dir) / f"sim_{rec['tag']}.json", sim)

        def g(res: dict[str, Any], grp: str, m: str, s: str) -> float | None:
            v: float | None = res.get(grp, {}).get(m, {}).get(s)
            return v

        m = rec.get("metrics") or {}
        kv_moved = m.get("sglang_ppd_kv_bytes_transferred_total")
        kv_note = "router /metrics"
        if kv_moved is None and rec["router"] == "rust":
            # every request of the Rust router is P->D, and it served the same requests as the `pd`
            # run (same spec and seed): the pd router's count of the full prompts' KV is the estimate
            pd_rec = next((x for x in recs if x["router"] == "pd" and x["workload"] == rec["workload"]
                           and x["load"] == rec["load"]), None)  # fmt: skip
            kv_moved = (pd_rec or {}).get("metrics", {}).get("sglang_ppd_kv_bytes_transferred_total")
            kv_note = "estimate: the pd run's count (same requests, all P->D)"
        row: dict[str, Any] = {"tag": rec["tag"], "router": rec["router"], "workload": rec["workload"],
               "load": rec["load"], "num_requests": live["num_requests"], "num_failed": live["num_failed"],
               "routes": live.get("routes"), "kv_bytes_moved": kv_moved, "kv_bytes_source": kv_note,
               "kv_bytes_avoided": m.get("sglang_ppd_kv_bytes_avoided_total"),
               "slo_attainment": live.get("slo_attainment"), "sim_slo_attainment": sim.get("slo_attainment"),
               "sim_num_requests": sim["num_requests"], "sim_kv_bytes_moved": sim.get("kv_bytes_transferred"),
               "sim_routes": sim.get("routes"), "by_route_live": live.get("by_route"),
               "cached_prompt_fraction": live.get("cached_prompt_fraction")}  # fmt: skip
        for grp, name in (("turn1", "t1"), ("turn2plus", "t2"), ("overall", "all")):
            for stat in ("p50", "p95"):
                lv, sv = g(live, grp, "ttft_ms", stat), g(sim, grp, "ttft_ms", stat)
                row[f"{name}_ttft_{stat}"] = lv
                row[f"sim_{name}_ttft_{stat}"] = sv
                row[f"err_{name}_ttft_{stat}"] = None if lv is None or not sv else (lv - sv) / sv
                # with the per-request HTTP/router floor the simulator leaves out (benchmarks/gpu.md)
                sf = None if sv is None else sv + a.floor_ms
                row[f"err_floor_{name}_ttft_{stat}"] = None if lv is None or not sf else (lv - sf) / sf
        lv, sv = g(live, "overall", "tpot_ms", "p95"), g(sim, "overall", "tpot_ms", "p95")
        row.update(
            tpot_p95=lv, sim_tpot_p95=sv, err_tpot_p95=None if lv is None or not sv else (lv - sv) / sv
        )
        rows.append(row)
    md = markdown(rows)
    print(md)
    write_result_json(Path(a.out), {
        "benchmark": "gpu_2p2d", "device": extras.get("device"), "date": extras.get("date"),
        "seed": a.seed, "sim": {"profile": a.profile, "kv_capacity_tokens": kv_cap,
                                "link_gbytes_per_s": a.link_gbs,
                                "cluster": "2P2D", "rust_simulated_as": "pd_cache_aware",
                                "floor_ms": a.floor_ms},
        "code_note": a.code_note, "extras": extras, "rows": rows, "markdown": md,
        "collected_on": machine_info(),
        "command": "python benchmarks/gpu/cluster_2p2d.py " + " ".join(sys.argv[1:]),
    })  # fmt: skip
    return 0


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{v:+.0%}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def _att(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _gb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e9:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| workload | load | router | req (failed) | T1 TTFT P50 / P95 | T2+ TTFT P50 / P95 | TPOT P95 "
            "| SLO att. | KV moved GB (sim) | sim T1 P50 / P95 | sim T2+ P50 / P95 | sim TPOT P95 | sim SLO "
            "| err T1 P95 | err T2+ P95 | err TPOT P95 |")  # fmt: skip
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['workload']} | x{r['load']:g} | {r['router']} | {r['error']} |")
            continue
        kv = r["kv_bytes_moved"]
        out.append(
            f"| {r['workload']} | x{r['load']:g} | {r['router']} | {r['num_requests']} ({r['num_failed']}) | "
            f"{_f(r['t1_ttft_p50'])} / {_f(r['t1_ttft_p95'])} | "
            f"{_f(r['t2_ttft_p50'])} / {_f(r['t2_ttft_p95'])} | "
            f"{_f(r['tpot_p95'])} | {_att(r['slo_attainment'])} | "
            f"{_gb(kv)} ({_gb(r['sim_kv_bytes_moved'])}) | "
            f"{_f(r['sim_t1_ttft_p50'])} / {_f(r['sim_t1_ttft_p95'])} | "
            f"{_f(r['sim_t2_ttft_p50'])} / {_f(r['sim_t2_ttft_p95'])} | {_f(r['sim_tpot_p95'])} | "
            f"{_att(r['sim_slo_attainment'])} | "
            f"{_f(r['err_t1_ttft_p95'], True)} | {_f(r['err_t2_ttft_p95'], True)} | "
            f"{_f(r['err_tpot_p95'], True)} |"
        )
    return "\n".join(out)
