"""The SGLang decode-worker extension: local (append) and deflected prefills, and its telemetry.

Only :mod:`sglang_ppd.worker.sglang_ext` imports sglang/torch. Everything else in this package is
an import-free seam (argument splitting, version pins, the request-field carrier, the per-iteration
local-prefill budget and admission, the telemetry publisher) so it runs and is tested on CPU.

Start a PPD-capable decode server with::

    python -m sglang_ppd.worker <sglang.launch_server args> [--ppd-... options]
"""
