"""Stats snapshot (the router's ``/stats`` JSON, see ``sglang_ppd.router.stats``) -> rich renderable.

Pure: no I/O and no clock, so a hand-made snapshot renders the same every time (tested).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

ROUTE_LABELS = {"pd": "PD (P->D)", "local": "local append", "deflect": "deflected"}
ROUTE_STYLES = {"pd": "cyan", "local": "green", "deflect": "magenta"}


def _num(v: Any, fmt: str = "{:,}") -> str:
    return "-" if v is None else fmt.format(v)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _bytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def bar(frac: float | None, width: int = 10) -> Text:
    if frac is None:
        return Text("-" + " " * (width + 6))
    frac = min(max(frac, 0.0), 1.0)
    full = round(frac * width)
    style = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
    filled = Text("█" * full, style=style) + Text("░" * (width - full), style="dim")
    return filled + Text(f" {100 * frac:4.0f}%")


def _short(url: str) -> str:
    return url.split("://", 1)[-1]


def header(s: dict[str, Any], url: str, error: str | None) -> Text:
    r = s.get("requests", {})
    t = Text.assemble(
        ("sglang_ppd ", "bold"), (url, "bold cyan"),
        f"   policy {s.get('policy', '-')}   model {s.get('model') or '-'}",
        f"   up {s.get('uptime_s', 0):.0f}s   ",
        f"in flight {r.get('inflight', 0)}   queued {r.get('queued', 0)}   total {r.get('total', 0):,}   ",
        (f"errors {r.get('errors', 0)}", "red" if r.get("errors") else ""),
        f"   retries {r.get('retries', 0)}   rejected {r.get('rejected', 0)}",
    )
    if error:
        t.append(f"\n{error}", style="bold red")
    return t


def workers_table(s: dict[str, Any]) -> Table:
    max_age = (s.get("slo") or {}).get("max_telemetry_age_ms", 1000.0)
    t = Table(title="workers", title_justify="left", expand=True, pad_edge=False)
    for col, just in (("worker", "left"), ("role", "left"), ("run", "right"), ("wait", "right"),
                      ("in flight", "right"), ("queued pf tok", "right"), ("KV usage", "left"),
                      ("iter ms dec/mix", "right"), ("telemetry", "right"), ("prefix index", "right")):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for w in s.get("workers", []):
        role = Text(w["role"], style="cyan" if w["role"] == "prefill" else "green")
        if w.get("supports_local_prefill"):
            role.append(" +ppd", style="bold green")
        if not w.get("healthy", True):
            role.append(" DOWN", style="bold red")
        age = w.get("telemetry_age_ms")
        age_text = Text("never" if age is None else f"{age:,.0f} ms",
                        style="red" if age is None or age > max_age else "")
        if w.get("telemetry_source"):
            age_text.append(f" {w['telemetry_source']}", style="dim")
        idx = w.get("prefix_index")
        index = Text(f"{idx or 'none'} {w.get('indexed_blocks', 0):,}")
        if idx == "approx":
            index.stylize("yellow")
        if w.get("kv_event_gaps"):
            index.append(f" gaps {w['kv_event_gaps']}", style="red")
        t.add_row(
            _short(w["url"]), role, _num(w.get("num_running")), _num(w.get("num_waiting")),
            _num(w.get("num_inflight")), _num(w.get("queued_prefill_tokens")), bar(w.get("kv_usage")),
            f"{_ms(w.get('decode_iter_ms'))} / {_ms(w.get('mixed_iter_ms'))}", age_text, index,
        )
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
        t.add_column(col, justify="left" if col == "class" else "right")

    def cell(v: float | None, target: float | None) -> Text:
        return Text(_ms(v), style="" if v is None or target is None or v <= target else "red")

    for key, label in (("turn1", "Turn 1"), ("turn2+", "Turn 2+")):
        lat = (s.get("latency") or {}).get(key) or {}
        ttft, tpot = slo.get("ttft_ms"), slo.get("tpot_ms")
        t.add_row(label, f"{lat.get('count', 0):,}",
                  cell(lat.get("ttft_p50_ms"), ttft), cell(lat.get("ttft_p95_ms"), ttft),
                  cell(lat.get("tpot_p50_ms"), tpot), cell(lat.get("tpot_p95_ms"), tpot))
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
    t.add_row("KV bytes transferred P->D", _bytes(moved))
    t.add_row("KV bytes avoided", Text(_bytes(avoided), style="green"))
    t.add_row("avoided share", bar(avoided / (moved + avoided) if moved + avoided else None))
    t.add_row(f"SLO TTFT <= {_ms(slo.get('ttft_ms'))} ms", _pct(att.get("ttft")))
    t.add_row(f"SLO TPOT <= {_ms(slo.get('tpot_ms'))} ms", _pct(att.get("tpot")))
    t.add_row(f"SLO both ({att.get('count', 0):,} requests)", Text(_pct(att.get("both")), style="bold"))
    t.add_row("policy decision p50 / p99", f"{_ms(dec.get('p50'))} / {_ms(dec.get('p99'))} ms")
    return t


def render(stats: dict[str, Any] | None, url: str, error: str | None = None) -> RenderableType:
    """The whole dashboard. ``stats`` is ``None`` before the first successful poll."""
    s = stats or {}
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(routes_table(s), reasons_table(s))
    grid.add_row(latency_table(s), totals_table(s))
    body = Group(header(s, url, error), workers_table(s), grid)
    return Panel(body, title="sglang_ppd live monitor", border_style="blue")
