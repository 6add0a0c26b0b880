"""The load generator / trace replayer: ``sglang-ppd bench`` against any SGLang or OpenAI endpoint."""
