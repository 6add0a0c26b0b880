"""SGLang's KV events as each supported release encodes them, and their untrusted-input decoding.

The goldens under tests/goldens/ were produced by each release's own msgspec classes, taken from the
wheel source by tests/goldens/make_sglang_goldens.py.
"""

from __future__ import annotations

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
