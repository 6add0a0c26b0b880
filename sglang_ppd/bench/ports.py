"""Free loopback ports for the servers a benchmark or test starts itself."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

_taken: set[int] = set()
LOWEST_PORT = 20000


def free_port() -> int:
    """A free port below the kernel's ephemeral range (no outgoing connection can take it between
    this check and its server's bind), not handed out before by this process. Where that range
    starts too low to leave room, a port the kernel picks."""
    low = 32768  # Linux's default
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low - LOWEST_PORT < 1000:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.Random()
    while True:
        port = rng.randrange(LOWEST_PORT, low)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
