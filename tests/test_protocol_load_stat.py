"""SGLang's LoadStat in its 5-field (0.5.19) and 10-field (0.5.20+) shapes, from each release's own
class (tests/goldens/make_sglang_goldens.py), and its untrusted-input checks."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sglang_ppd.protocol import load_stat

GOLDENS = Path(__file__).parent / "goldens"
INDEX = json.loads((GOLDENS / "sglang_goldens.json").read_text())
WITH_LOAD = sorted(v for v in INDEX if "load" in INDEX[v])


def test_releases_before_0_5_19_have_no_load_stat() -> None:
    assert "load" not in INDEX["0.5.17"] and WITH_LOAD == ["0.5.19", "0.5.20", "0.5.22", "0.5.23"]


@pytest.mark.parametrize("version", WITH_LOAD)
def test_each_release_s_load_stat_decodes_to_what_it_encoded(version: str) -> None:
    payload = (GOLDENS / f"sglang-{version}-load.msgpack").read_bytes()
    want = INDEX[version]["load"]
    stat = load_stat.decode(payload)
    got = {f: getattr(stat, f) for f in stat.__struct_fields__}
    assert got == {f: want.get(f) for f in got}
    assert len(INDEX[version]["load_shape"]) == (6 if version == "0.5.19" else 11)
    # Our encoder writes the release's shape back, byte for byte.
    assert load_stat.encode_message(0, stat)[2] == payload


def test_queued_prefill_tokens_come_only_from_10_field_stats() -> None:
    five = load_stat.decode((GOLDENS / "sglang-0.5.19-load.msgpack").read_bytes())
    ten = load_stat.decode((GOLDENS / "sglang-0.5.23-load.msgpack").read_bytes())
    assert load_stat.summary_from_stats([ten, ten]).queued_prefill_tokens == 14_000
    assert load_stat.summary_from_stats([ten, five]).queued_prefill_tokens is None
    assert load_stat.summary_from_stats([five]).kv_capacity_tokens == 500_000


@pytest.mark.parametrize(
    "fields",
    [
        [-1, 0, 0, 0, 0],
        [0, 0, 2**60, 0, 0],
        [0, 0, 0, 0, -2],
        [0, 0, 0, 0, 0, -5, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 2**62],
        [0, "1", 0, 0, 0],
        [0, 0, 0, 0, 0, 1.5, 0, 0, 0, 0],
    ],
)
def test_out_of_range_or_mistyped_counts_are_refused(fields: list[object]) -> None:
    with pytest.raises(ValueError, match="LoadStat"):
        load_stat.decode(msgspec.msgpack.encode(["LoadStat", *fields]))
