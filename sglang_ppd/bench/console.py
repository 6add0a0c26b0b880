"""What ``sglang-ppd bench`` prints: progress while it runs (a bar on a terminal, plain lines when
piped, so a log shows the run is alive) and the summary after it."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 132
"""Rich assumes 80 columns when stderr is not a terminal; the summary needs more."""
LINE_EVERY_S = 10.0
MAX_ERRORS_SHOWN = 3


def make_console() -> Console:
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = max(console.width, PIPED_WIDTH)
    return console


class ProgressReport:
    """Counts finished requests. On a terminal: a live bar. Piped: one line at every tenth of the
    planned requests and at least every ``LINE_EVERY_S`` while requests finish."""

    def __init__(self, console: Console, total: int, enabled: bool) -> None:
        self.console, self.total, self.enabled = console, total, enabled
        self.done = self.failed = 0
        self.t0 = self.last_line_s = time.monotonic()
        self.bar: Progress | None = None
        if enabled and console.is_terminal:
            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip
            self.task = self.bar.add_task("replaying", total=total)

    def __enter__(self) -> ProgressReport:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def finished(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"replaying ({self.failed} failed)")
            return
        if not self.enabled:
            return
        now = time.monotonic()
        tenth = max(self.total // 10, 1)
        if self.done % tenth == 0 or now - self.last_line_s >= LINE_EVERY_S:
            self.last_line_s = now
            self.console.print(
                f"[{now - self.t0:5.0f} s] {self.done:,} of {self.total:,} requests done, "
                f"{self.failed:,} failed",
                highlight=False,
            )


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:,.2f} GB"


def _route_mix(routes: dict[str, int]) -> str:
    total = sum(routes.values())
    if not total:
        return "none"
    return ", ".join(f"{k} {n:,} ({n / total:.0%})" for k, n in sorted(routes.items(), key=lambda kv: -kv[1]))


def summary(s: dict[str, Any]) -> RenderableType:
    """The table of latency percentiles by turn group, then what the endpoint did: routes, KV bytes,
    failures and whether the run was cut short."""
    att = s["slo_attainment"]
    slo = s["slo"]
    t = Table(
        title=f"{s['policy']} on {s['source']}: {s['num_requests']:,} requests, {s['num_failed']:,} failed",
        caption=f"SLO: TTFT <= {slo['ttft_ms']:,.0f} ms and TPOT <= {slo['tpot_ms']:,.0f} ms; "
        f"met by {'-' if att is None else f'{att:.1%}'}, goodput {s['goodput_rps']:.2f} req/s",
    )
    for col in ("group", "count", "TTFT p50", "TTFT p95", "TPOT p50", "TPOT p95", "ITL p95", "E2E p95"):
        t.add_column(col if col in ("group", "count") else f"{col} ms", justify="right", no_wrap=True)
    for name, label in (("overall", "all"), ("turn1", "turn 1"), ("turn2plus", "turn 2+")):
        g = s[name]
        cells = [g[m][q] for m, q in (("ttft_ms", "p50"), ("ttft_ms", "p95"), ("tpot_ms", "p50"),
                                      ("tpot_ms", "p95"), ("itl_ms", "p95"), ("e2e_ms", "p95"))]  # fmt: skip
        t.add_row(label, f"{g['count']:,}", *map(_ms, cells))
    lines = [f"routes: {_route_mix(s.get('routes') or {})}"]
    moved, avoided = s.get("kv_bytes_transferred"), s.get("kv_bytes_avoided")
    if moved is not None or avoided is not None:
        lines.append(f"KV bytes (router /metrics): {_gb(moved)} moved P->D, {_gb(avoided)} not moved")
    for error, n in list((s.get("errors") or {}).items())[:MAX_ERRORS_SHOWN]:
        lines.append(f"failed {n:,}x: {error}")
    out: list[RenderableType] = [t, Text("\n".join(lines))]
    if s.get("interrupted"):
        out.append(Text(
            f"interrupted after {s['wall_s']:.0f} s: {s['num_requests']:,} of {s['num_planned']:,} planned "
            "requests finished; the result covers only those", style="bold yellow",
        ))  # fmt: skip
    return Group(*out)
