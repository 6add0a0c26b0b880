"""Emulated SGLang prefill/decode workers for CPU-only clusters, paced in real time by the cost model.

One process per worker (``sglang-ppd emulate``). It serves the SGLang HTTP subset the router uses and
SGLang's ZMQ wire formats (KV events with replay), plus our worker telemetry, so the router cannot
tell it from a real server. It is a test and demo backend, not a replacement for SGLang.
"""
