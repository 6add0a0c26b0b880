"""SGLang's KV events as each supported release encodes them, and their untrusted-input decoding.

The goldens under tests/goldens/ were produced by each release's own msgspec classes, taken from the
wheel source by tests/goldens/make_sglang_goldens.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sglang_ppd.protocol import kv_events


def test_a_non_numeric_block_size_is_a_decode_error_not_a_crash() -> None:
    # Regression: int("64k") raised a bare ValueError, which the KV-event feed did not catch, so one
    # such message stopped that worker's feed for good.
    for shape in (
        [1.0, [["BlockStored", [1], None, [5], "64k", None, None]], 0],
        [1.0, [{"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None, "token_ids": [5],
                "block_size": "64k", "lora_id": None}], 0],
    ):  # fmt: skip
        with pytest.raises(kv_events.KVEventDecodeError, match="block_size"):
            kv_events.decode_batch(msgspec.msgpack.encode(shape))


GOLDENS = Path(__file__).parent / "goldens"
INDEX = json.loads((GOLDENS / "sglang_goldens.json").read_text())


def _as_dict(e: kv_events.KVEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(e).__name__}
    for name in e.__struct_fields__:
        out[name] = getattr(e, name)
    return out


@pytest.mark.parametrize("version", sorted(INDEX))
def test_each_release_s_own_encoding_decodes_to_what_it_encoded(version: str) -> None:
    payload = (GOLDENS / f"sglang-{version}-kv.msgpack").read_bytes()
    expected = INDEX[version]["kv"]
    batch = kv_events.decode_batch(payload)
    assert batch.ts == expected["ts"] and batch.attn_dp_rank == expected["attn_dp_rank"]
    assert len(batch.events) == len(expected["events"])
    for got, want in zip(batch.events, expected["events"], strict=True):
        # Fields a release does not have decode as absent (None).
        assert _as_dict(got) == {k: want.get(k) for k in _as_dict(got)} | {"type": want["type"]}


def test_the_goldens_cover_both_encodings_and_every_new_field() -> None:
    shapes = {v: INDEX[v]["kv_shape"][1][1] for v in INDEX}
    assert isinstance(shapes["0.5.17"], list) and isinstance(shapes["0.5.23"], dict)
    assert shapes["0.5.19"][-1] == {"cache_salt": "salt-a"}  # 0.5.19's trailing metadata map
    assert "medium" not in shapes["0.5.23"]  # omit-defaults: an unset medium is not sent
    stored = kv_events.decode_batch((GOLDENS / "sglang-0.5.23-kv.msgpack").read_bytes()).events[1]
    assert isinstance(stored, kv_events.BlockStored)
    assert (stored.cache_salt, stored.session_id, stored.lora_name) == ("salt-a", "sess-1", "adapter-x")


def _stored_map(**override: Any) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None, "token_ids": [5],
            "block_size": 1, "lora_id": None, **override}  # fmt: skip


@pytest.mark.parametrize(
    ("batch", "named"),
    [
        ([1.0, [_stored_map(block_hashes=[2**64 - 1])], 0], "block_hashes outside int64"),
        ([1.0, [_stored_map(parent_block_hash=2**63)], 0], "parent_block_hash outside int64"),
        ([1.0, [_stored_map(token_ids=[-1])], 0], "token_ids"),
        ([1.0, [_stored_map(token_ids=[[]])], 0], "token_ids"),
        ([1.0, [_stored_map(block_size=0)], 0], "block_size 0"),
        ([1.0, [_stored_map(block_size=1 << 20)], 0], "block_size"),
        ([1.0, [_stored_map(session_id="s" * 5000)], 0], "session_id longer"),
        ([1.0, [_stored_map(cache_salt=7)], 0], "cache_salt"),
        ([1.0, [_stored_map(lora_name=["x"])], 0], "lora_name"),
        ([1.0, [_stored_map()], -1], "attn_dp_rank -1"),
        ([1.0, [_stored_map()], "0"], "attn_dp_rank"),
        ([float("nan"), [_stored_map()], 0], "ts is not finite"),
        ([1.0, [{"type": "BlockShared", "block_hashes": [1]}], 0], "BlockShared"),
        ([1.0, [["BlockRemoved", [1], 5]], 0], "BlockRemoved.medium"),
        ([1.0, [["BlockStored", [1], None, [5], 1, "lora"]], 0], "BlockStored.lora_id"),
    ],
)
def test_every_field_is_typed_and_range_checked(batch: list[Any], named: str) -> None:
    with pytest.raises(kv_events.KVEventDecodeError, match=re.escape(named)):
        kv_events.decode_batch(msgspec.msgpack.encode(batch))


def test_unknown_map_keys_from_a_later_release_are_ignored() -> None:
    batch = kv_events.decode_batch(msgspec.msgpack.encode([1.0, [_stored_map(future_field={"a": 1})], 0]))
    assert isinstance(batch.events[0], kv_events.BlockStored) and batch.events[0].block_hashes == [1]


def test_the_emulator_s_encoding_is_0_5_17_s() -> None:
    batch = kv_events.decode_batch((GOLDENS / "sglang-0.5.17-kv.msgpack").read_bytes())
    assert kv_events.encode_batch(batch) == (GOLDENS / "sglang-0.5.17-kv.msgpack").read_bytes()
