"""PNG plots of a ``sim compare`` sweep: one line per policy against load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (
    ("TTFT P95, Turn 1 (ms)", ("turn1", "ttft_ms", "p95")),
    ("TTFT P95, Turn 2+ (ms)", ("turn2plus", "ttft_ms", "p95")),
    # The cost side of every trade-off above: prefill work moved onto decode workers slows decoding.
    ("TPOT P95 (ms)", ("overall", "tpot_ms", "p95")),
    ("SLO attainment", ("slo_attainment",)),
)


def _get(row: dict[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = row
    for key in path:
        v = v.get(key) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None


def plot_compare(rows: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """``compare.png`` with one panel per entry of ``PANELS``; returns the files written."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for ax, (label, path) in zip(axes, PANELS, strict=True):
        for policy in policies:
            pts = [(r["rate_scale"], _get(r, path)) for r in rows if r["policy"] == policy]
            xs = [x for x, y in pts if y is not None]
            ys = [y for _, y in pts if y is not None]
            if xs:
                ax.plot(xs, ys, marker="o", label=policy)
        ax.set_xlabel("load (rate scale)")
        ax.set_title(label)
        if "TTFT" in label:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = out_dir / "compare.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]
