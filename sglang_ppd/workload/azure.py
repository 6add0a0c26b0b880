"""The Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``; Splitwise, ISCA 2024):
single-turn, open-loop requests, arrivals as offsets from the first row."""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta, timezone

from sglang_ppd.workload.spec import TurnSpec, Workload

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
SAMPLE_FILE = "azure_conv_2023.csv"

_TS = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?$")


def parse_timestamp_s(text: str) -> float:
    """Seconds since the epoch for ``2023-11-16 18:15:46.6805900`` (any number of fractional
    digits, optional ``Z``/``+HH:MM`` zone, naive = UTC) or a plain number of seconds."""
    text = text.strip()
    m = _TS.match(text)
    if m is None:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"unreadable TIMESTAMP {text!r}") from None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    tz = timezone.utc
    zone = m.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp() + frac


def parse_azure(lines: list[str], source: str, *, limit: int | None, rate_scale: float) -> Workload:
    reader = csv.DictReader(lines)
    missing = set(HEADER) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: not an Azure LLM inference CSV, missing columns {sorted(missing)}")
    out: list[TurnSpec] = []
    first_s: float | None = None
    for lineno, row in enumerate(reader, start=2):
        if limit is not None and len(out) >= limit:
            break
        try:
            ts = parse_timestamp_s(row["TIMESTAMP"])
            input_len, output_len = int(row["ContextTokens"]), int(row["GeneratedTokens"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}:{lineno}: bad Azure row {row}: {exc}") from None
        first_s = ts if first_s is None else first_s
        out.append(
            TurnSpec(
                session_id=f"az{len(out)}",
                turn=1,
                # A request always carries at least one prompt token and produces one token.
                input_len=max(input_len, 1),
                output_len=max(output_len, 1),
                history_len=0,
                arrival_s=max(ts - first_s, 0.0) / rate_scale,
            )
        )
    return tuple(out)
