"""Stats snapshot (the router's ``/stats`` JSON, see ``sglang_ppd.router.stats``) -> rich renderable.

Pure: no I/O and no clock, so a hand-made snapshot renders the same every time (tested). The
terminal's width picks the layout: side-by-side panels from ``WIDE_COLS`` up, one compact column
below it (80 columns by 24 rows hold a 2P2D cluster).
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sglang_ppd.monitor.cells import bar, ms, nbytes, pct
from sglang_ppd.monitor.workers import TELEMETRY_LEGEND, workers_table

ROUTE_LABELS = {"pd": "PD (P->D)", "local": "local append", "deflect": "deflected"}
ROUTE_STYLES = {"pd": "cyan", "local": "green", "deflect": "magenta"}


WIDE_COLS = 110
"""At this width and above: two columns of panels; below it one compact column."""


def _short(url: str) -> str:
    return url.split("://", 1)[-1]


def header(s: dict[str, Any], url: str, error: str | None) -> Text:
    r = s.get("requests", {})
    t = Text.assemble(
        ("sglang_ppd ", "bold"), (_short(url), "bold cyan"),
        f"  policy {s.get('policy', '-')}  {s.get('model') or '-'}  up {s.get('uptime_s', 0):.0f}s\n",
        f"requests: in flight {r.get('inflight', 0)}  queued {r.get('queued', 0)}  ",
        f"total {r.get('total', 0):,}  ",
        (f"errors {r.get('errors', 0)}", "red" if r.get("errors") else ""),
        f"  retries {r.get('retries', 0)}  rejected {r.get('rejected', 0)}",
    )  # fmt: skip
    if error:
        t.append(f"\n{error}", style="bold red")
    return t


def routes_table(s: dict[str, Any]) -> Table:
    routes = s.get("routes", {})
    total = sum(routes.values()) or 1
    t = Table(title="route mix", title_justify="left", expand=True)
    t.add_column("route")
    t.add_column("requests", justify="right")
    t.add_column("share")
    for key in ("pd", "local", "deflect"):
        n = routes.get(key, 0)
        share = bar(n / total if routes else None)
        t.add_row(Text(ROUTE_LABELS[key], style=ROUTE_STYLES[key]), f"{n:,}", share)
    return t


def reasons_table(s: dict[str, Any]) -> Table:
    t = Table(title="top reasons", title_justify="left", expand=True)
    t.add_column("route")
    t.add_column("reason", overflow="fold")
    t.add_column("n", justify="right")
    for r in s.get("top_reasons", [])[:5]:
        t.add_row(Text(r["route"], style=ROUTE_STYLES.get(r["route"], "")), r["reason"], f"{r['count']:,}")
    return t


def latency_table(s: dict[str, Any]) -> Table:
    slo = s.get("slo") or {}
    t = Table(title="latency (streamed requests)", title_justify="left", expand=True)
    for col in ("class", "n", "TTFT p50", "TTFT p95", "TPOT p50", "TPOT p95"):
        unit = "" if col in ("class", "n") else " ms"
        t.add_column(col + unit, justify="left" if col == "class" else "right")

    def cell(v: float | None, target: float | None) -> Text:
        return Text(ms(v), style="" if v is None or target is None or v <= target else "red")

    for key, label in (("turn1", "Turn 1"), ("turn2+", "Turn 2+")):
        lat = (s.get("latency") or {}).get(key) or {}
        ttft, tpot = slo.get("ttft_ms"), slo.get("tpot_ms")
        t.add_row(
            label,
            f"{lat.get('count', 0):,}",
            cell(lat.get("ttft_p50_ms"), ttft),
            cell(lat.get("ttft_p95_ms"), ttft),
            cell(lat.get("tpot_p50_ms"), tpot),
            cell(lat.get("tpot_p95_ms"), tpot),
        )
    return t


def totals_table(s: dict[str, Any]) -> Table:
    kv = s.get("kv_bytes") or {}
    moved, avoided = kv.get("transferred", 0), kv.get("avoided", 0)
    att = s.get("slo_attainment") or {}
    slo = s.get("slo") or {}
    dec = s.get("decision_ms") or {}
    t = Table(title="KV and SLO", title_justify="left", expand=True, show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("KV bytes transferred P->D", nbytes(moved))
    t.add_row("KV bytes avoided", Text(nbytes(avoided), style="green"))
    t.add_row("avoided share", bar(avoided / (moved + avoided) if moved + avoided else None))
    t.add_row(f"SLO TTFT <= {ms(slo.get('ttft_ms'))} ms", pct(att.get("ttft")))
    t.add_row(f"SLO TPOT <= {ms(slo.get('tpot_ms'))} ms", pct(att.get("tpot")))
    t.add_row(f"SLO both ({att.get('count', 0):,} requests)", Text(pct(att.get("both")), style="bold"))
    t.add_row("policy decision p50 / p99", f"{ms(dec.get('p50'))} / {ms(dec.get('p99'))} ms")
    return t


def _compact(s: dict[str, Any]) -> Text:
    """Routes, KV, SLO and the top reasons in four lines, for the narrow layout."""
    routes = s.get("routes", {})
    total = sum(routes.values())
    t = Text("routes ")
    for key in ("pd", "local", "deflect"):
        n = routes.get(key, 0)
        t.append(f" {ROUTE_LABELS[key]} ", style=ROUTE_STYLES[key])
        t.append(f"{n:,} ({n / total:.0%})" if total else "0")
    kv = s.get("kv_bytes") or {}
    moved, avoided = kv.get("transferred", 0), kv.get("avoided", 0)
    share = f" ({avoided / (moved + avoided):.0%})" if moved + avoided else ""
    t.append(f"\nKV moved P->D {nbytes(moved)}, avoided ")
    t.append(f"{nbytes(avoided)}{share}", style="green")
    att, slo = s.get("slo_attainment") or {}, s.get("slo") or {}
    t.append(f"\nSLO TTFT <= {ms(slo.get('ttft_ms'))} ms {pct(att.get('ttft'))}, "
             f"TPOT <= {ms(slo.get('tpot_ms'))} ms {pct(att.get('tpot'))}, both ")  # fmt: skip
    t.append(pct(att.get("both")), style="bold")
    t.append(f" of {att.get('count', 0):,}")
    reasons = ", ".join(f"{r['route']} {r['reason']} {r['count']:,}" for r in s.get("top_reasons", [])[:3])
    t.append(f"\ntop reasons: {reasons or '-'}")
    return t


def render(
    stats: dict[str, Any] | None, url: str, error: str | None = None, width: int = 160
) -> RenderableType:
    """The whole dashboard for a terminal ``width`` columns wide. ``stats`` is ``None`` before the
    first successful poll."""
    s = stats or {}
    narrow = width < WIDE_COLS
    workers, has_telemetry = workers_table(s, width if narrow else width - 4)
    legend = Text(TELEMETRY_LEGEND if has_telemetry else "", style="dim")
    if narrow:
        latency = latency_table(s)
        latency.box, latency.show_edge, latency.title, latency.expand = box.SIMPLE_HEAD, False, None, False
        return Group(header(s, url, error), workers, legend, _compact(s), latency)
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(routes_table(s), reasons_table(s))
    grid.add_row(latency_table(s), totals_table(s))
    body = Group(header(s, url, error), workers, legend, grid)
    return Panel(body, title="sglang_ppd live monitor", border_style="blue")
