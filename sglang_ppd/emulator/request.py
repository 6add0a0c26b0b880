"""One emulated request as the HTTP layer sees it: its input, and its growing output."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from sglang_ppd.emulator import tokens


class Mode(str, enum.Enum):
    PD_PREFILL = "pd_prefill"
    """On P: prefill, then hand the KV to the D worker that bootstraps the same room."""
    PD_DECODE = "pd_decode"
    """On D: wait for the room's KV from P, then decode."""
    LOCAL = "local"
    """On D (``do_local_prefill``): prefill here, chunks mixed into decode steps, then decode."""
    AGGREGATED = "aggregated"
    """No bootstrap fields: prefill and decode on this worker, as a non-disaggregated server."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    host: str
    port: int
    room: int


@dataclass(frozen=True, slots=True)
class GenerateInput:
    rid: str
    input_ids: tuple[int, ...]
    max_new_tokens: int
    mode: Mode
    bootstrap: Bootstrap | None = None
    chunk_len: int | None = None
    return_logprob: bool = False


class RequestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class RequestHandle:
    """The output side: the engine appends tokens and sets ``changed``; the HTTP layer reads."""

    inp: GenerateInput
    arrival_s: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    _text: bytearray = field(default_factory=bytearray)
    """The output's text, kept incrementally: a stream sends the whole text in every chunk."""
    cached_tokens: int = 0
    finished: bool = False
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, token_ids: list[int]) -> None:
        self.output_ids.extend(token_ids)
        self._text += tokens.text_bytes(token_ids)
        self.changed.set()

    @property
    def text(self) -> str:
        return self._text.decode("ascii")

    def finish(self, error: str | None = None) -> None:
        if not self.finished:
            self.finished = True
            self.error = error
            self.changed.set()

    async def wait_change(self) -> None:
        await self.changed.wait()
        self.changed.clear()

    async def wait_finished(self) -> None:
        while not self.finished:
            await self.wait_change()

    def meta_info(self) -> dict[str, object]:
        n = len(self.output_ids)
        meta: dict[str, object] = {
            "id": self.inp.rid,
            "finish_reason": {"type": "length", "length": n} if self.finished else None,
            "prompt_tokens": len(self.inp.input_ids),
            "completion_tokens": n,
            "cached_tokens": self.cached_tokens,
            "e2e_latency": time.perf_counter() - self.arrival_s,
        }
        if self.error is not None:
            meta["finish_reason"] = {"type": "abort", "message": self.error}
        if self.inp.return_logprob:
            # Deterministic tokens have probability 1. SGLang's shape: [logprob, token id, text].
            if self.inp.mode is not Mode.PD_DECODE:  # only where the prompt was prefilled
                ids = self.inp.input_ids
                meta["input_token_logprobs"] = [[None if i == 0 else 0.0, t, None] for i, t in enumerate(ids)]
            meta["output_token_logprobs"] = [[0.0, t, None] for t in self.output_ids]
        return meta
