"""Port picking for self-started servers: free, outside the ephemeral range, never handed out twice."""

from __future__ import annotations

import socket

from sglang_ppd.bench.ports import ephemeral_range, free_block, free_port


def test_blocks_are_free_disjoint_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    blocks = [range(b, b + 4) for b in (free_block(4) for _ in range(20))]
    port = free_port()  # once: two calls would make a range of any length, even an empty one
    blocks.append(range(port, port + 1))
    ports = [p for block in blocks for p in block]
    assert len(set(ports)) == len(ports)
    assert all(not low <= p <= high for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
