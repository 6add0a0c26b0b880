"""One finished (or failed) request, as seen by the client (live) or the simulator.

Times are seconds on one clock (simulated or the client's monotonic clock). vLLM definitions:
TTFT = first_token_s - arrival_s; E2E = finish_s - arrival_s; TPOT = (E2E - TTFT) / (output_len - 1);
ITL = gaps between consecutive output tokens.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    session_id: str
    turn: int
    input_len: int
    output_len: int
    arrival_s: float
    first_token_s: float | None
    """``None`` when the request failed before its first token."""
    finish_s: float | None
    route: str | None
    """The route kind ("pd", "local", "deflect"); ``None`` when unknown (e.g. an external router)."""
    reason: str | None = None
    cached_len: int = 0
    """Prompt tokens served from a cache where the prefill ran."""
    kv_bytes_transferred: int = 0
    kv_bytes_avoided: int = 0
    """KV bytes a naive P->D transfer of the full prompt would have moved but this route did not."""
    itl_ms: tuple[float, ...] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.first_token_s is not None and self.finish_s is not None

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_s is None else 1000.0 * (self.first_token_s - self.arrival_s)

    @property
    def e2e_ms(self) -> float | None:
        return None if self.finish_s is None else 1000.0 * (self.finish_s - self.arrival_s)

    @property
    def tpot_ms(self) -> float | None:
        ttft, e2e = self.ttft_ms, self.e2e_ms
        if ttft is None or e2e is None or self.output_len < 2:
            return None
        return (e2e - ttft) / (self.output_len - 1)
