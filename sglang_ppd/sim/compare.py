"""``sglang-ppd sim compare``: every policy x load x seed, one JSON per run, a table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from sglang_ppd.core.config import ConfigError
from sglang_ppd.core.policy import available_policies, parse_param_overrides
from sglang_ppd.metrics.result import write_result_json
from sglang_ppd.sim.cli import _progress, _slo, _workload, report_failures, summary_table
from sglang_ppd.sim.config import load_sim_config
from sglang_ppd.sim.plots import plot_compare
from sglang_ppd.sim.run import simulate


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} needs one or more numbers > 0, got {text!r}")
    return values


def scoped_params(pairs: list[str], policies: list[str]) -> dict[str, dict[str, str]]:
    """``k=v`` applies to every policy, ``POLICY.k=v`` to that one only."""
    out: dict[str, dict[str, str]] = {p: {} for p in policies}
    for key, value in parse_param_overrides(pairs).items():
        scope, dot, name = key.partition(".")
        if dot and scope in out:
            out[scope][name] = value
        elif dot:
            raise ConfigError(f"--param {key}: {scope!r} is not one of --policies {','.join(policies)}")
        else:
            for p in policies:
                out[p][key] = value
    return out


def mean_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed-average: numbers are averaged (ignoring None), the rest from the first. An integer that
    every run agrees on stays that integer (a count is not a float because one seed was run)."""
    first = results[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in results]
        if isinstance(value, dict):
            out[key] = mean_of([v for v in values if isinstance(v, dict)])
        elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if nums and all(isinstance(v, int) for v in nums) and len(set(nums)) == 1:
                out[key] = nums[0]
            else:
                out[key] = sum(nums) / len(nums) if nums else None
        else:
            out[key] = value
    return out


def run_compare(args: argparse.Namespace, console: Console) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    known = available_policies()
    unknown = [p for p in policies if p not in known]
    if not policies or unknown:
        raise ConfigError(f"unknown policies {unknown}; available policies: {', '.join(sorted(known))}")
    scales = _floats(args.rate_scales, "--rate-scales")
    if args.seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    seeds = [args.seed + i for i in range(args.seeds)]
    params = scoped_params(args.param, policies)
    config, slo = load_sim_config(args.config), _slo(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    rc = 0
    with _progress(console) as bar:
        task = bar.add_task("compare", total=len(policies) * len(scales) * len(seeds))
        for scale in scales:
            workloads = {seed: _workload(args, seed, scale) for seed in seeds}
            for policy in policies:
                runs = []
                for seed in seeds:
                    bar.update(task, description=f"{policy} x{scale:g} seed {seed}")
                    result, outcome = simulate(
                        workloads[seed], policy, params=params[policy], slo=slo, config=config, seed=seed
                    )
                    rc = max(rc, report_failures(f"{policy} x{scale:g} seed {seed}", outcome.records))
                    result["rate_scale"] = scale
                    result["source"] = args.trace or args.workload
                    write_result_json(out_dir / f"{policy}_x{scale:g}_s{seed}.json", result)
                    runs.append(result)
                    bar.advance(task)
                row = mean_of(runs)
                row["seeds"] = seeds
                row["seed"] = seeds[0] if len(seeds) == 1 else None  # the mean of seeds is no seed
                rows.append(row)
    rows.sort(key=lambda r: (policies.index(r["policy"]), r["rate_scale"]))
    write_result_json(out_dir / "compare.json", {"runs": rows})
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {seeds[0]}-{seeds[-1]}"
    console.print(summary_table(rows, title=f"{args.trace or args.workload}, {which}"))
    for png in plot_compare(rows, out_dir, title=str(args.trace or args.workload)):
        console.print(f"wrote {png}")
    console.print(f"wrote {out_dir / 'compare.json'} and {len(rows) * len(seeds)} run files")
    return rc
