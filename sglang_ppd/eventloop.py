"""The asyncio event loop our long-running servers (router, emulated workers) run on."""

from __future__ import annotations


def install_uvloop() -> None:
    """Use uvloop when it is installed (less CPU per request); the stock loop otherwise (Windows)."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()
