"""The sglang_ppd PD router: an aiohttp service in front of SGLang prefill and decode workers."""
