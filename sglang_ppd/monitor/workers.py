"""The monitor's worker table: short names (P0, D1 plus the port) and only the columns that fit,
kept by priority, so that it reads at 80 columns as well as at 200."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rich import box
from rich.table import Table
from rich.text import Text

from sglang_ppd.monitor.cells import bar, ms, num

TELEMETRY_LEGEND = (
    "telemetry: age of the last load report; source ppd = PPD worker telemetry, "
    "loadstat = SGLang ZMQ load events, v1/loads = SGLang HTTP"
)


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    max_width: int
    """Cells are at most this wide (the header may wrap)."""
    priority: int
    """Lower is kept longer when the table is narrowed."""
    cell: Callable[[dict[str, Any], float], Text | str]
    justify: str = "right"


def short_names(workers: list[dict[str, Any]]) -> list[str]:
    """``P0``, ``P1``, ``D0`` ... in the router's order, each with its port (and its host when the
    workers are not all on one host): a whole URL is too wide, and a cut one hides what differs."""
    hosts = {urlsplit(w.get("url", "")).hostname for w in workers}
    names, counts = [], {"prefill": 0, "decode": 0}
    for w in workers:
        role = w.get("role", "")
        index = counts.get(role, 0)
        counts[role] = index + 1
        parts = urlsplit(w.get("url", ""))
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        where = port if len(hosts) == 1 else f"{parts.hostname or '?'}{port}"
        names.append(f"{'P' if role == 'prefill' else 'D' if role == 'decode' else '?'}{index} {where}")
    return names


def _kind(w: dict[str, Any], _: float) -> Text:
    role = Text(w.get("role", "?"), style="cyan" if w.get("role") == "prefill" else "green")
    if w.get("supports_local_prefill"):
        role.append("+ppd", style="bold green")
    return role


def _telemetry(w: dict[str, Any], max_age_ms: float) -> Text:
    age = w.get("telemetry_age_ms")
    text = Text("never" if age is None else f"{age:,.0f} ms",
                style="red" if age is None or age > max_age_ms else "")  # fmt: skip
    if w.get("telemetry_source"):
        text.append(f" {w['telemetry_source']}", style="dim")
    return text


def _index(w: dict[str, Any], _: float) -> Text:
    idx = w.get("prefix_index")
    text = Text(f"{idx or 'none'} {w.get('indexed_blocks', 0):,}")
    if idx == "approx":
        text.stylize("yellow")
    if w.get("kv_event_gaps"):
        text.append(f" gaps {w['kv_event_gaps']}", style="red")
    return text


def _factor(w: dict[str, Any]) -> Text:
    """The router's measured/predicted prefill time there (``self_correct``), with its samples."""
    f, n = w.get("prefill_cost_factor"), w.get("correction_samples")
    if not isinstance(f, (int, float)) or not n:
        return Text("-", style="dim")
    return Text(f"{f:.2f} ", style="yellow" if abs(f - 1.0) > 0.25 else "").append(f"n{n}", style="dim")


COLUMNS = (
    Column("run", 5, 1, lambda w, _: num(w.get("num_running"))),
    Column("wait", 5, 1, lambda w, _: num(w.get("num_waiting"))),
    Column("KV usage", 11, 2, lambda w, _: bar(w.get("kv_usage"), width=5), "left"),
    Column("in flight", 6, 3, lambda w, _: num(w.get("num_inflight"))),
    Column("queued tok", 10, 4, lambda w, _: num(w.get("queued_prefill_tokens"))),
    Column("telemetry", 16, 5, _telemetry),
    Column(
        "iter ms dec/mix", 13, 6, lambda w, _: f"{ms(w.get('decode_iter_ms'))} / {ms(w.get('mixed_iter_ms'))}"
    ),  # noqa: E501
    Column("kind", 11, 7, _kind, "left"),
    Column("prefix index", 15, 8, _index),
    Column("prefill x", 9, 9, lambda w, _: _factor(w)),
)
CELL_PAD = 3
"""Rich's padding and separator around each cell."""


def _width(header: str, cells: list[Text | str], max_width: int) -> int:
    """Columns the cells need (the header may wrap at spaces), at most ``max_width``."""
    words = [len(word) for word in header.split()]
    need = max(words + [Text(c).cell_len if isinstance(c, str) else c.cell_len for c in cells])
    return min(need, max_width)


def workers_table(s: dict[str, Any], width: int) -> tuple[Table, bool]:
    """The table, and whether it has the telemetry column (whose source labels want a legend).
    Columns are added by priority while they fit ``width``; they show in table order."""
    workers = s.get("workers", [])
    max_age_ms = (s.get("slo") or {}).get("max_telemetry_age_ms", 1000.0)
    names = [Text(n, style="cyan" if w.get("role") == "prefill" else "green")
             for w, n in zip(workers, short_names(workers), strict=True)]  # fmt: skip
    for w, name in zip(workers, names, strict=True):
        if not w.get("healthy", True):
            name.append(" DOWN", style="bold red")
    cells = {c.header: [c.cell(w, max_age_ms) for w in workers] for c in COLUMNS}
    used = _width("worker", list(names), 40) + CELL_PAD
    keep: set[str] = set()
    for col in sorted(COLUMNS, key=lambda c: c.priority):
        need = _width(col.header, cells[col.header], col.max_width) + CELL_PAD
        if used + need > width:
            break
        used += need
        keep.add(col.header)
    cols = [c for c in COLUMNS if c.header in keep]
    t = Table(title="workers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.add_column("worker", no_wrap=True)
    for col in cols:
        t.add_column(col.header, justify=col.justify, max_width=col.max_width)  # type: ignore[arg-type]
    for i, name in enumerate(names):
        t.add_row(name, *(cells[col.header][i] for col in cols))
    return t, "telemetry" in keep
