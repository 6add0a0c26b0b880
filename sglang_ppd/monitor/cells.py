"""Cell formatters the monitor's tables share: ``-`` for unknown, units where the header has none."""

from __future__ import annotations

from typing import Any

from rich.text import Text


def num(v: Any, fmt: str = "{:,}") -> str:
    return "-" if v is None else fmt.format(v)


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def nbytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def bar(frac: float | None, width: int = 10) -> Text:
    """A ``width``-cell bar and the percentage: ``width + 6`` columns in all."""
    if frac is None:
        return Text("-" + " " * (width + 5))
    frac = min(max(frac, 0.0), 1.0)
    full = round(frac * width)
    style = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
    filled = Text("█" * full, style=style) + Text("░" * (width - full), style="dim")
    return filled + Text(f" {100 * frac:4.0f}%")
