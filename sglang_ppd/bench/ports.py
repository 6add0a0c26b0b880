"""Free loopback ports for the servers a benchmark or test starts itself."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 20000
_taken: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_block(n: int) -> int:
    """The first of ``n`` consecutive free ports (``sglang-ppd launch`` allocates worker ports
    upwards), outside the kernel's ephemeral range, so that no outgoing connection can take one
    before its server binds, and none handed out before by this process."""
    low, high = ephemeral_range()
    span = (LOWEST_PORT, low - n) if low - n > LOWEST_PORT else (high + 1, 65000 - n)
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(*span)
        block = range(base, base + n)
        if _taken.intersection(block):
            continue
        socks = []
        try:
            for port in block:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _taken.update(block)
        return base
    raise RuntimeError(f"no block of {n} free ports found")


def free_port() -> int:
    return free_block(1)
