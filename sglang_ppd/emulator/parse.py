"""Request bodies -> :class:`GenerateInput`, with 400s that name the problem."""

from __future__ import annotations

import uuid
from typing import Any

from sglang_ppd.emulator import tokens
from sglang_ppd.emulator.request import Bootstrap, GenerateInput, Mode, RequestError
from sglang_ppd.protocol import fields

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default sampling_params.max_new_tokens


def _int_field(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise RequestError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def token_ids(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, list) and value and isinstance(value[0], list):
        raise RequestError(f"batched {name} (a list of lists) is not supported by the emulator")
    if not isinstance(value, list) or not all(isinstance(t, int) and t >= 0 for t in value):
        raise RequestError(f"{name} must be a list of non-negative integers")
    return tuple(value)


def prompt_ids(body: dict[str, Any], text_key: str, ids_key: str | None) -> tuple[int, ...]:
    if ids_key is not None and body.get(ids_key) is not None:
        ids = token_ids(body[ids_key], ids_key)
    elif isinstance(body.get(text_key), str):
        ids = tuple(tokens.encode(body[text_key]))
    elif isinstance(body.get(text_key), list):
        ids = token_ids(body[text_key], text_key)
    else:
        want = f"{text_key!r} (text)" + (f" or {ids_key!r} (token ids)" if ids_key else "")
        raise RequestError(f"missing prompt: pass {want}")
    if not ids:
        raise RequestError("the prompt is empty")
    return ids


_EXTENSION_FIELDS = (fields.LOCAL_PREFILL_CHUNK_LEN, fields.ROUTE_KIND)


def routing(
    body: dict[str, Any], role: str, ppd: bool, upstream: bool = False
) -> tuple[Mode, Bootstrap | None, int | None]:
    """Which path the request takes on this worker, from SGLang's bootstrap fields and ours.
    ``upstream``: a stock conditional-aggregation server, which knows none of sglang_ppd's fields
    (refused, so a router that sends them to one is caught)."""
    if upstream and (sent := [f for f in _EXTENSION_FIELDS if f in body]):
        raise RequestError(f"{', '.join(sent)}: not a field of this (stock, conditional-aggregation) server")
    local = body.get(fields.LOCAL_PREFILL) is True
    room = body.get(fields.BOOTSTRAP_ROOM)
    chunk_len = _int_field(body, fields.LOCAL_PREFILL_CHUNK_LEN, 1)
    if local:
        if role != "decode" or not ppd:
            raise RequestError(
                f"{fields.LOCAL_PREFILL} is only honoured by a decode worker started with --ppd "
                f"(this one: role={role}, ppd={ppd})"
            )
        return Mode.LOCAL, None, chunk_len
    if room is None:
        return Mode.AGGREGATED, None, None
    host, port = body.get(fields.BOOTSTRAP_HOST), body.get(fields.BOOTSTRAP_PORT)
    if not isinstance(room, int) or isinstance(room, bool):
        raise RequestError(f"{fields.BOOTSTRAP_ROOM} must be an integer")
    if not isinstance(host, str) or not isinstance(port, int):
        need = f"{fields.BOOTSTRAP_HOST} (str) and {fields.BOOTSTRAP_PORT} (int)"
        raise RequestError(f"a PD request needs {need}")
    mode = Mode.PD_PREFILL if role == "prefill" else Mode.PD_DECODE
    return mode, Bootstrap(host, port, room), None


def new_rid(body: dict[str, Any]) -> str:
    rid = body.get("rid")
    return rid if isinstance(rid, str) and rid else uuid.uuid4().hex


def generate_input(body: dict[str, Any], role: str, ppd: bool, upstream: bool = False) -> GenerateInput:
    """An SGLang ``/generate`` body."""
    sampling = body.get("sampling_params") or {}
    if not isinstance(sampling, dict):
        raise RequestError("sampling_params must be an object")
    max_new = _int_field(sampling, "max_new_tokens", 1)
    mode, bootstrap, chunk_len = routing(body, role, ppd, upstream)
    return GenerateInput(
        rid=new_rid(body),
        input_ids=prompt_ids(body, "text", "input_ids"),
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS if max_new is None else max_new,
        mode=mode,
        bootstrap=bootstrap,
        chunk_len=chunk_len,
        return_logprob=body.get("return_logprob") is True,
    )


def openai_input(
    body: dict[str, Any], role: str, ppd: bool, ids: tuple[int, ...], upstream: bool = False
) -> GenerateInput:
    max_new = _int_field(body, "max_completion_tokens", 1) or _int_field(body, "max_tokens", 1)
    mode, bootstrap, chunk_len = routing(body, role, ppd, upstream)
    return GenerateInput(
        rid=new_rid(body),
        input_ids=ids,
        max_new_tokens=16 if max_new is None else max_new,  # OpenAI's completions default
        mode=mode,
        bootstrap=bootstrap,
        chunk_len=chunk_len,
    )
