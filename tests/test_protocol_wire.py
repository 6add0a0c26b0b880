"""Wire formats: SGLang block-hash goldens and KV-event / LoadStat / server_info decoding."""

from __future__ import annotations

import msgspec
import pytest

from sglang_ppd.protocol import block_hash, kv_events, load_stat, server_info

# Goldens computed once with sglang 0.5.17's own code: ``get_hash_str`` (mem_cache/utils.py) over
# ``get_native_hash`` with mem_cache/cpp_utils/hash_binding.cpp compiled against OpenSSL, then
# ``hash_str_to_int64``. (case -> (token ids, page size, published int64 hashes, first hex digest))
GOLDENS = {
    "p1_short": (
        [1, 2, 3],
        1,
        [7470307888890966271, -1634645291211865391, 7325169757385981536],
        "67abdd721024f0ff4e0b3f4c2fc13bc5bad42d0b7851d456d88d203d15aaa450",
    ),
    "p4_partial_last_page": (
        list(range(10)),
        4,
        [-4977211910723114241, 90435953025800507, -4541777970319746100],
        "baed642339816affb3fe8719792d0e4ce82f12db72b7373d244eaa65445800fe",
    ),
    "p16_large_ids": (
        [151643, 872, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 77091, 198, 9707, 0, 42],
        16,
        [-3966720440322597126, 7831764368658477937],
        "c8f360c6af4a5efaa6379fcd1ad92b58fdeadca707f248a8f22ec801641656de",
    ),
    "p2_ascii": (
        list(b"hello world"),
        2,
        [
            8574055219115565294,
            -8480564827310239518,
            -9011315374977739828,
            464738773873401294,
            -8279834504395178958,
            -6316034112608807953,
        ],
        "76fd29cb63f7a0ee6d335f45bf5de6f14e97e03d333ddd35b75ed5bf0e94f7e0",
    ),
}
CHAIN_GOLDEN = [-873556230699706081, -8429985882354289250]  # [5..8] then [9..12] chained, page 4


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_block_hash_matches_sglang_goldens(name: str) -> None:
    tokens, page_size, expected, first_hex = GOLDENS[name]
    assert block_hash.page_hashes(tokens, page_size) == expected
    assert block_hash.page_digests(tokens, page_size)[0].hex() == first_hex


def test_block_hash_chains_across_radix_nodes() -> None:
    parent = block_hash.page_digests([5, 6, 7, 8], 4)
    child = block_hash.page_hashes([9, 10, 11, 12], 4, prior_digest=parent[-1])
    assert block_hash.page_hashes([5, 6, 7, 8], 4) + child == CHAIN_GOLDEN
    assert block_hash.page_hashes(list(range(5, 13)), 4) == CHAIN_GOLDEN


def test_full_page_hashes_drop_partial_page_and_reject_bad_tokens() -> None:
    assert block_hash.full_page_hashes(list(range(10)), 4) == GOLDENS["p4_partial_last_page"][2][:2]
    with pytest.raises(ValueError):
        block_hash.page_hashes([-1], 1)
    with pytest.raises(ValueError):
        block_hash.page_hashes([1], 0)


def _sample_batch() -> kv_events.KVEventBatch:
    return kv_events.KVEventBatch(
        ts=1.5,
        events=[
            kv_events.BlockStored(
                block_hashes=[11],
                parent_block_hash=None,
                token_ids=[1, 2],
                block_size=2,
                lora_id=None,
                medium="GPU",
            ),
            kv_events.BlockRemoved(block_hashes=[11, -3]),
            kv_events.AllBlocksCleared(),
        ],
        attn_dp_rank=0,
    )


def test_kv_event_roundtrip_uses_sglang_array_shape() -> None:
    payload = kv_events.encode_batch(_sample_batch())
    raw = msgspec.msgpack.decode(payload)
    assert raw[0] == 1.5 and raw[2] == 0
    assert raw[1][0] == ["BlockStored", [11], None, [1, 2], 2, None, "GPU"]
    assert raw[1][2] == ["AllBlocksCleared"]
    assert kv_events.decode_batch(payload) == _sample_batch()


def test_kv_event_decode_accepts_older_arrays_without_trailing_fields() -> None:
    older = msgspec.msgpack.encode([2.0, [["BlockStored", [7], 6, [9], 1, None], ["BlockRemoved", [7]]]])
    batch = kv_events.decode_batch(older)
    assert batch.attn_dp_rank is None
    assert batch.events == [
        kv_events.BlockStored(
            block_hashes=[7], parent_block_hash=6, token_ids=[9], block_size=1, lora_id=None
        ),
        kv_events.BlockRemoved(block_hashes=[7]),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        msgspec.msgpack.encode("x"),
        msgspec.msgpack.encode([1.0, [["Nope"]]]),
        msgspec.msgpack.encode([1.0, [["BlockRemoved", "notalist"]]]),
        msgspec.msgpack.encode({"ts": 1}),
        msgspec.msgpack.encode({"ts": 1, "events": []}),  # the batch is positional in every release
        b"\x00" * (kv_events.MAX_PAYLOAD_BYTES + 1),
    ],
)
def test_kv_event_decode_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(kv_events.KVEventDecodeError):
        kv_events.decode_batch(payload)


def test_seq_frames_are_signed_big_endian() -> None:
    frames = kv_events.encode_message("t", 5, _sample_batch())
    assert frames[0] == b"t" and frames[1] == b"\x00" * 7 + b"\x05"
    assert kv_events.seq_from_bytes(kv_events.seq_to_bytes(kv_events.END_SEQ)) == -1


def test_load_stat_wire_and_v1_loads() -> None:
    frames = load_stat.encode_message(3, load_stat.LoadStat(2, 1, 500, 1000, 0))
    assert frames[0] == b"load"
    assert msgspec.msgpack.decode(frames[2]) == ["LoadStat", 2, 1, 500, 1000, 0]
    assert load_stat.summary_from_stats([load_stat.decode(frames[2])]).kv_capacity_tokens == 1000
    with pytest.raises(ValueError):
        load_stat.decode(b"\x93\x01\x02\x03")
    summary = load_stat.summary_from_loads_json(
        {
            "loads": [
                {
                    "dp_rank": 0,
                    "num_running_reqs": 3,
                    "num_waiting_reqs": 2,
                    "num_used_tokens": 10,
                    "max_total_num_tokens": 100,
                    "num_waiting_uncached_tokens": 7,
                },
                {
                    "dp_rank": 1,
                    "num_running_reqs": 1,
                    "num_waiting_reqs": 0,
                    "num_used_tokens": 5,
                    "max_total_num_tokens": 100,
                },
            ]
        }
    )
    assert summary == load_stat.LoadSummary(4, 2, 15, 200, 7)
    with pytest.raises(ValueError):
        load_stat.summary_from_loads_json({"loads": []})


def test_server_info_kv_events_block_and_extensions() -> None:
    info = server_info.parse_server_info(
        {
            "disaggregation_mode": "decode",
            "page_size": 16,
            "served_model_name": "m",
            "kv_events": {
                "publisher": "zmq",
                "endpoint_host": "*",
                "endpoint_port_base": 5557,
                "topic": "",
                "block_size": 16,
                "dp_size": 2,
                "replay_endpoint_port_base": 5600,
                "load_endpoint_port_base": 5700,
                "load_topic": "load",
            },
            "ppd_local_prefill": True,
            "ppd_telemetry_endpoint": "tcp://*:6000",
        },
        "http://10.1.2.3:30001",
    )
    assert info.kv_events is not None
    assert info.kv_events.endpoints == ("tcp://10.1.2.3:5557", "tcp://10.1.2.3:5558")
    assert info.kv_events.replay_endpoints == ("tcp://10.1.2.3:5600", "tcp://10.1.2.3:5601")
    assert info.kv_events.load_endpoints == ("tcp://10.1.2.3:5700", "tcp://10.1.2.3:5701")
    assert info.supports_local_prefill and info.telemetry_endpoint == "tcp://10.1.2.3:6000"
    stock = server_info.parse_server_info({"kv_events": None, "disaggregation_mode": "decode"}, "http://h:1")
    assert stock.kv_events is None and not stock.supports_local_prefill and stock.page_size == 1


def test_lazy_page_hashes_match_and_compute_only_what_is_read() -> None:
    tokens = list(range(5, 13)) + [99]
    lazy = block_hash.LazyPageHashes(tokens, 4)
    assert len(lazy) == 2 and lazy[0] == CHAIN_GOLDEN[0]
    assert len(lazy._hashes) == 1  # page 2 not hashed until read
    assert list(lazy) == CHAIN_GOLDEN == block_hash.full_page_hashes(tokens, 4)
    with pytest.raises(IndexError):
        lazy[2]
