"""The additive per-iteration step model shared by the policies, the simulator and the emulator.

One iteration (a forward pass of a continuous batch) costs

    t = base + c_pf*Σχ + c_attn*Σχ(k + χ/2) + c_ctx*Σk      (prefill chunks: χ new tokens over k cached)
          + c_batch*B + c_kv*Σctx                            (B decoding requests with contexts ctx)

where ``base`` is ``prefill_base_ms`` when the batch holds any prefill tokens and ``decode_base_ms``
otherwise. ``c_ctx`` is the measured cost of reading a cached prefix that the textbook χ·k term
misses with SGLang's extend kernel (see configs/profiles/*.yaml for provenance).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from pydantic import Field

from sglang_ppd.core.config import StrictModel, load_yaml

PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "profiles"


class ModelShape(StrictModel):
    num_layers: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    dtype_bytes: int = Field(2, gt=0)

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


class StepCoefficients(StrictModel):
    prefill_base_ms: float = Field(ge=0)
    decode_base_ms: float = Field(ge=0)
    c_pf_ms: float = Field(ge=0, description="per new prefill token")
    c_attn_ms: float = Field(ge=0, description="per new token x attended token")
    c_ctx_ms: float = Field(0.0, ge=0, description="per cached prefix token read by a prefill chunk")
    c_batch_ms: float = Field(0.0, description="per decoding request")
    c_kv_ms: float = Field(ge=0, description="per KV token read by decode")


class CostProfile(StrictModel):
    name: str
    gpu: str
    model: str
    provenance: str
    shape: ModelShape
    step: StepCoefficients
    kv_capacity_tokens: int = Field(gt=0, description="KV pool per worker, in tokens")
    chunked_prefill_size: int = Field(8192, gt=0)
    max_running_requests: int = Field(2048, gt=0)
    page_size: int = Field(1, gt=0)
    transfer_setup_ms: float = Field(0.0, ge=0, description="fixed cost per KV transfer (handshake)")

    @property
    def kv_bytes_per_token(self) -> int:
        return self.shape.kv_bytes_per_token

    def prefill_chunk_ms(self, new_len: int, cached_len: int) -> float:
        """Marginal cost of one prefill chunk inside an iteration (no base)."""
        s = self.step
        return new_len * (s.c_pf_ms + s.c_attn_ms * (cached_len + new_len / 2)) + s.c_ctx_ms * cached_len

    def decode_ms(self, num_decodes: int, context_tokens: int) -> float:
        """Marginal cost of ``num_decodes`` decoding requests holding ``context_tokens`` in all."""
        s = self.step
        return s.c_batch_ms * num_decodes + s.c_kv_ms * context_tokens

    def iteration_ms(self, chunks: Iterable[tuple[int, int]], num_decodes: int, context_tokens: int) -> float:
        """One iteration: ``chunks`` are (new_len, cached_len) prefill pieces mixed with decodes."""
        pf = 0.0
        has_prefill = False
        for new_len, cached_len in chunks:
            if new_len > 0:
                has_prefill = True
                pf += self.prefill_chunk_ms(new_len, cached_len)
        if not has_prefill and num_decodes == 0:
            return 0.0
        base = self.step.prefill_base_ms if has_prefill else self.step.decode_base_ms
        return base + pf + self.decode_ms(num_decodes, context_tokens)

    def prefill_ms(self, new_len: int, cached_len: int, chunk_len: int | None = None) -> float:
        """An idle prefill of ``new_len`` tokens over ``cached_len``, split into chunks."""
        size = chunk_len or self.chunked_prefill_size
        total, done = 0.0, 0
        while done < new_len:
            n = min(size, new_len - done)
            total += self.iteration_ms(((n, cached_len + done),), 0, 0)
            done += n
        return total

    def transfer_ms(self, num_tokens: int, bandwidth_bytes_per_s: float, queued_bytes: int = 0) -> float:
        if num_tokens <= 0:
            return 0.0
        nbytes = num_tokens * self.kv_bytes_per_token + queued_bytes
        return self.transfer_setup_ms + 1000.0 * nbytes / bandwidth_bytes_per_s


@cache
def load_profile(name_or_path: str) -> CostProfile:
    """A profile by name (``configs/profiles/<name>.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILES_DIR / f"{name_or_path}.yaml"
        if not p.is_file():
            known = ", ".join(sorted(x.stem for x in PROFILES_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"unknown cost profile {name_or_path!r}; known profiles: {known}")
    return load_yaml(CostProfile, p)


DEFAULT_PROFILE = "h100-llama31-8b"
