"""sglang_ppd: a Python routing and policy layer for SGLang prefill-decode disaggregation."""

__version__ = "0.1.0"
