"""``python -m sglang_ppd.launch --config configs/<name>.yaml``: a whole PD cluster, the router and the
live monitor, with one command. ``backend: emulated`` needs no GPU; ``backend: sglang`` starts real
SGLang servers (decode servers through ``python -m sglang_ppd.worker`` when PPD-capable)."""

from sglang_ppd.launch.cli import main

__all__ = ["main"]
