"""Client request bodies -> one validated upstream SGLang ``/generate`` body.

All three APIs (SGLang ``/generate``, OpenAI completions and chat) become a ``/generate`` body on
``input_ids`` (tokenized here, once), so every worker and the prefix index see the same tokens.
Errors raise :class:`BadRequest` with a message naming the offending field (HTTP 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sglang_ppd.protocol import fields
from sglang_ppd.router.tokenizer import Tokenizer

DEFAULT_GENERATE_MAX_NEW_TOKENS = 128  # SGLang's default
MAX_TOKEN_ID = 2**31
"""Ids at or past this are refused whatever the tokenizer (SGLang keeps them in int32)."""
DEFAULT_COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default
ROUTER_OWNED = (
    fields.BOOTSTRAP_HOST,
    fields.BOOTSTRAP_PORT,
    fields.BOOTSTRAP_ROOM,
    fields.LOCAL_PREFILL,
    fields.LOCAL_PREFILL_CHUNK_LEN,
    fields.ROUTE_KIND,
)


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to route: the upstream body (without routing fields) and what routing needs."""

    body: dict[str, Any]
    input_ids: list[int]
    max_new_tokens: int
    stream: bool
    return_logprob: bool
    return_token_ids: bool = False
    """OpenAI requests only: put the generated ids in each choice's ``token_ids``."""


def _int_field(obj: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} must be an integer")
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low} and {high}, got {value}")
    return value


def _token_ids(value: Any, vocab_limit: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BadRequest("input_ids must be a non-empty list of integers")
    if isinstance(value[0], list):
        raise BadRequest("batch requests (a list of prompts) are not supported by the router; send one each")
    # C-speed checks: prompts can be 100k ids long and this runs on every request.
    if set(map(type, value)) != {int} or min(value) < 0 or max(value) >= vocab_limit:
        raise BadRequest(f"input_ids must hold token ids in 0..{vocab_limit - 1}")
    return value


def _check_len(ids: list[int], max_tokens: int) -> None:
    if len(ids) > max_tokens:
        raise BadRequest(f"prompt of {len(ids)} tokens exceeds the router's limit of {max_tokens}")


def _check_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    for key in ROUTER_OWNED:
        if key in body:
            raise BadRequest(f"{key} is set by the router; remove it from the request")
    return body


def prepare_generate(body: Any, tok: Tokenizer, max_prompt_tokens: int, max_new_tokens_cap: int) -> Prepared:
    body = _check_object(body)
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise BadRequest("give exactly one of text or input_ids")
    if text is not None:
        if isinstance(text, list):
            raise BadRequest(
                "batch requests (a list of prompts) are not supported by the router; send one each"
            )
        if not isinstance(text, str) or not text:
            raise BadRequest("text must be a non-empty string")
        ids = tok.encode(text)
    ids = _token_ids(ids, tok.id_limit or MAX_TOKEN_ID)
    _check_len(ids, max_prompt_tokens)
    sp = body.get("sampling_params") or {}
    if not isinstance(sp, dict):
        raise BadRequest("sampling_params must be an object")
    max_new = _int_field(sp, "max_new_tokens", DEFAULT_GENERATE_MAX_NEW_TOKENS, 0, max_new_tokens_cap)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean")
    return_logprob = body.get("return_logprob", False)
    if not isinstance(return_logprob, bool):
        raise BadRequest("return_logprob must be a boolean")
    upstream = {k: v for k, v in body.items() if k != "text"}
    upstream["input_ids"] = ids
    upstream["sampling_params"] = {**sp, "max_new_tokens": max_new}
    return Prepared(upstream, ids, max_new, stream, return_logprob)


_SAMPLING_KEYS = {  # OpenAI name -> SGLang sampling_params name
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "stop": "stop",
    "stop_token_ids": "stop_token_ids",
    "ignore_eos": "ignore_eos",
    "min_tokens": "min_new_tokens",
    "skip_special_tokens": "skip_special_tokens",
    "seed": "sampling_seed",
}


def _sampling(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    sp: dict[str, Any] = {"max_new_tokens": max_tokens}
    for src, dst in _SAMPLING_KEYS.items():
        value = body.get(src)
        if value is None:
            continue
        if src in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty") and (
            not isinstance(value, (int, float)) or isinstance(value, bool)
        ):
            raise BadRequest(f"{src} must be a number")
        if src == "stop" and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))
        ):
            raise BadRequest("stop must be a string or a list of strings")
        sp[dst] = value
    return sp


def prepare_openai(
    body: Any,
    chat: bool,
    tok: Tokenizer,
    model_name: str,
    max_prompt_tokens: int,
    max_new_tokens_cap: int,
    default_chat_max_tokens: int,
) -> Prepared:
    body = _check_object(body)
    model = body.get("model")
    if model is not None and model != model_name:
        raise BadRequest(f"model {model!r} is not served here; use {model_name!r}", status=404)
    if _int_field(body, "n", 1, 1, 1) != 1:
        raise BadRequest("n must be 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest("each message must be an object with a string role")
        try:
            ids = tok.apply_chat_template(messages)
        except ValueError as exc:
            raise BadRequest(f"messages: {exc}") from None
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _int_field(body, key, default_chat_max_tokens, 0, max_new_tokens_cap)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str) and prompt:
            ids = tok.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            ids = _token_ids(prompt, tok.id_limit or MAX_TOKEN_ID)
        elif isinstance(prompt, list) and prompt:
            raise BadRequest(
                "batch requests (a list of prompts) are not supported by the router; send one each"
            )
        else:
            raise BadRequest("prompt must be a non-empty string or a list of token ids")
        max_tokens = _int_field(body, "max_tokens", DEFAULT_COMPLETIONS_MAX_TOKENS, 0, max_new_tokens_cap)
    _check_len(ids, max_prompt_tokens)
    upstream: dict[str, Any] = {
        "input_ids": ids,
        "sampling_params": _sampling(body, max_tokens),
        "stream": stream,
    }
    return Prepared(upstream, ids, max_tokens, stream, False, return_token_ids=_token_ids_wanted(body))


def _token_ids_wanted(body: dict[str, Any]) -> bool:
    """``return_token_ids`` (vLLM/SGLang OpenAI extension): reply with each choice's ``token_ids``."""
    value = body.get("return_token_ids", False)
    if not isinstance(value, bool):
        raise BadRequest("return_token_ids must be a boolean")
    return value
