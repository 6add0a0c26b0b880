"""SGLang ``/generate`` replies -> OpenAI completions / chat completions replies (whole or streamed)."""

from __future__ import annotations

import time
from typing import Any

import orjson


def _finish_reason(meta: dict[str, Any]) -> str | None:
    fr = meta.get("finish_reason")
    if isinstance(fr, dict):
        kind = fr.get("type")
        return "length" if kind == "length" else "stop" if kind in ("stop", "eos", "matched") else kind
    return fr if isinstance(fr, str) else None


def _usage(meta: dict[str, Any], prompt_len: int) -> dict[str, int]:
    completion = int(meta.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt_len,
        "completion_tokens": completion,
        "total_tokens": prompt_len + completion,
    }


def full_response(
    gen: dict[str, Any], chat: bool, rid: str, model: str, prompt_len: int, token_ids: bool = False
) -> dict[str, Any]:
    meta = gen.get("meta_info") or {}
    text = gen.get("text") or ""
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(meta), "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    if token_ids:
        ids = gen.get("output_ids")
        choice["token_ids"] = ids if isinstance(ids, list) else None
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(meta, prompt_len),
    }


class StreamConverter:
    """Turns each upstream chunk into OpenAI SSE frames. SGLang streams cumulative ``text`` by default
    (incremental with ``--incremental-streaming-output``); both are handled."""

    def __init__(
        self, chat: bool, rid: str, model: str, prompt_len: int, include_usage: bool, token_ids: bool = False
    ) -> None:
        self.chat, self.rid, self.model, self.prompt_len = chat, rid, model, prompt_len
        self.token_ids = token_ids
        self.num_ids = 0
        self.include_usage = include_usage
        self.created = int(time.time())
        self.text = ""
        self.sent_role = False
        self.last_meta: dict[str, Any] = {}

    def _frame(self, choice: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self.rid,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice] if choice else [],
        }
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def chunk(self, gen: dict[str, Any]) -> bytes:
        meta = gen.get("meta_info") or {}
        self.last_meta = meta
        text = gen.get("text") or ""
        if text.startswith(self.text):
            delta, self.text = text[len(self.text) :], text
        else:
            delta, self.text = text, self.text + text
        out = b""
        if self.chat and not self.sent_role:
            self.sent_role = True
            out += self._frame(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            )
        fr = _finish_reason(meta)
        if self.chat:
            choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": fr}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": fr}
        new_ids: list[int] = []
        if self.token_ids:
            new_ids = self._new_ids(gen, meta)
            choice["token_ids"] = new_ids
        if delta or new_ids or fr is not None:
            out += self._frame(choice)
        return out

    def _new_ids(self, gen: dict[str, Any], meta: dict[str, Any]) -> list[int]:
        """This chunk's new ids: SGLang streams ``output_ids`` cumulatively (their count equals
        ``completion_tokens``) or, with ``--incremental-streaming-output``, as deltas."""
        ids = gen.get("output_ids")
        if not isinstance(ids, list):
            return []
        if meta.get("completion_tokens") == len(ids) and len(ids) >= self.num_ids:
            new = ids[self.num_ids :]
        else:
            new = ids
        self.num_ids += len(new)
        return new

    def done(self) -> bytes:
        out = b""
        if self.include_usage:
            out += self._frame({}, _usage(self.last_meta, self.prompt_len))
        return out + b"data: [DONE]\n\n"
