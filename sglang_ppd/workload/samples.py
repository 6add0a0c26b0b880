"""The trace samples shipped in ``data/`` (sources, licences and attribution in ``data/README.md``)."""

from __future__ import annotations

from importlib import resources


def sample_lines(name: str) -> list[str]:
    return (resources.files("sglang_ppd.workload") / "data" / name).read_text().splitlines()
