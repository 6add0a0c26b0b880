"""``--workload SPEC`` strings: ``KIND:key=value,key=value,...`` (every key optional).

``sessions:`` synthetic closed-loop multi-turn sessions::

    n=100            number of sessions
    rate=1.0         session arrivals per second (times --rate-scale)
    cv=1.0           CV of the gaps between session arrivals: 1 = Poisson, > 1 bursty (Gamma)
    turns=4          turns per session                       (a distribution, see below)
    think_s=exp:5    seconds between a reply and the next turn
    prompt=sharegpt  tokens of the first user message
    user=sharegpt    tokens of each later user message
    output=sharegpt  output tokens of every turn
    system=0         tokens of a system prompt shared by every session (prepended to turn 1)
    max_context=131072  a session ends before a turn whose prompt + output would not fit

``sharegpt:`` closed-loop sessions sampled from the shipped ShareGPT table:
``n=200, rate=1.0, cv=1.0, think_s=exp:5, max_context=131072``.

``azure:`` the shipped Azure conversation trace (open loop): ``n`` (first n requests, default all),
``start_s=0`` and ``duration_s`` (a window of the trace, re-based to 0).

``mooncake:`` the shipped Mooncake conversation trace, its first 30 minutes (open loop, sessions
inferred): ``n`` (first n requests of the window, default all), ``start_s=0`` and ``duration_s`` (a
window of the trace, re-based to 0; sessions are inferred inside the window).

``agentic:`` agentic tool-loop sessions (closed loop; distributions and their sources in
``sglang_ppd/workload/agentic.py``): ``n=300, rate=0.5, cv=1.0, turns=lognormal:20:0.7,
task=lognormal:400:0.8, tool_output=lognormal:800:1.0, tool_min=100, tool_max=8000,
output=lognormal:200:1.0, system=12000, think_s=uniform:0:1, max_context=131072``.

``sharegpt:``, ``azure:`` and ``mooncake:`` take ``file=PATH`` to use your own trace of that format
instead of the shipped sample (the path may not contain ``,``).

Distributions: a number (fixed), ``uniform:A:B``, ``exp:MEAN``, ``lognormal:MEDIAN:SIGMA``,
``geometric:MEAN`` or ``sharegpt`` (the shipped table's empirical distribution for that key).
Example: ``sessions:n=200,rate=2,cv=2.0,turns=geometric:4,think_s=exp:5,prompt=sharegpt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from sglang_ppd.workload import agentic, azure, mooncake, sharegpt
from sglang_ppd.workload.dists import Dist, parse_dist
from sglang_ppd.workload.loader import read_lines
from sglang_ppd.workload.samples import sample_lines
from sglang_ppd.workload.sessions import DEFAULT_MAX_CONTEXT_LEN
from sglang_ppd.workload.spec import Workload
from sglang_ppd.workload.synthetic import synthetic_conversations

Value = float | int | str | Dist | None


def _int_at_least(text: str, key: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ValueError(f"{key}={text}: expected an integer >= {low}")
    return value


def _positive_int(text: str, key: str) -> int:
    return _int_at_least(text, key, 1)


def _nonneg_int(text: str, key: str) -> int:
    return _int_at_least(text, key, 0)


def _float(text: str, key: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}={text}: expected a number") from None
    if not (value > 0 if positive else value >= 0) or value == float("inf"):
        raise ValueError(f"{key}={text}: expected a finite number {'> 0' if positive else '>= 0'}")
    return value


def _pos(text: str, key: str) -> float:
    return _float(text, key, positive=True)


def _nonneg(text: str, key: str) -> float:
    return _float(text, key, positive=False)


def _file(text: str, key: str) -> str:
    if not Path(text).is_file():
        raise ValueError(f"{key}={text}: no such file")
    return text


def _dist(column: str | None) -> Callable[[str, str], Dist]:
    def parse(text: str, key: str) -> Dist:
        return parse_dist(text, key, (lambda: sharegpt.empirical(column)) if column else None)

    return parse


Parser = Callable[[str, str], Value]
_SESSION_KEYS: dict[str, tuple[Parser, str]] = {
    "n": (_positive_int, "100"),
    "rate": (_pos, "1.0"),
    "cv": (_pos, "1.0"),
    "think_s": (_dist(None), "exp:5"),
    "max_context": (_positive_int, str(DEFAULT_MAX_CONTEXT_LEN)),
}
_AGENTIC_PARSERS: dict[str, Parser] = {
    "n": _positive_int, "rate": _pos, "cv": _pos, "turns": _dist(None), "task": _dist(None),
    "tool_output": _dist(None), "tool_min": _positive_int, "tool_max": _positive_int,
    "output": _dist(None), "system": _nonneg_int, "think_s": _dist(None), "max_context": _positive_int,
}  # fmt: skip
KINDS: dict[str, dict[str, tuple[Parser, str]]] = {
    "sessions": _SESSION_KEYS
    | {
        "turns": (_dist("turns"), "4"),
        "prompt": (_dist("prompt"), "sharegpt"),
        "user": (_dist("user"), "sharegpt"),
        "output": (_dist("output"), "sharegpt"),
        "system": (_nonneg_int, "0"),
    },
    "sharegpt": _SESSION_KEYS | {"n": (_positive_int, "200"), "file": (_file, "")},
    "azure": {
        "n": (_positive_int, ""),
        "start_s": (_nonneg, "0"),
        "duration_s": (_pos, ""),
        "file": (_file, ""),
    },
    "agentic": {key: (parse, agentic.DEFAULTS[key]) for key, parse in _AGENTIC_PARSERS.items()},
    "mooncake": {
        "n": (_positive_int, ""),
        "start_s": (_nonneg, "0"),
        "duration_s": (_pos, ""),
        "file": (_file, ""),
    },
}


def parse_spec(spec: str) -> tuple[str, dict[str, Value]]:
    """Split and validate a spec; every key gets its value or its default (``None`` if none)."""
    kind, _, rest = spec.strip().partition(":")
    if kind not in KINDS:
        raise ValueError(f"workload spec {spec!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    keys = KINDS[kind]
    given: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise ValueError(f"workload spec {spec!r}: {item!r} is not key=value")
        if key not in keys:
            raise ValueError(f"workload spec {spec!r}: unknown key {key!r}, use {', '.join(keys)}")
        if key in given:
            raise ValueError(f"workload spec {spec!r}: {key} given twice")
        given[key] = value.strip()
    params: dict[str, Value] = {}
    for key, (parse, default) in keys.items():
        text = given.get(key, default)
        params[key] = parse(text, key) if text else None
    return kind, params


def build_workload(
    spec: str, *, seed: int = 0, rate_scale: float = 1.0, limit: int | None = None
) -> Workload:
    """The workload a spec string describes (at most ``limit`` requests); see the module doc."""
    if not rate_scale > 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    kind, p = parse_spec(spec)
    if kind in ("sessions", "sharegpt", "agentic"):
        if kind == "agentic":
            convs = agentic.agentic_conversations(
                _int(p["n"]), turns=_dist_of(p["turns"]), task=_dist_of(p["task"]),
                tool_output=_dist_of(p["tool_output"]), tool_range=(_int(p["tool_min"]), _int(p["tool_max"])),
                output=_dist_of(p["output"]), seed=seed,
            )  # fmt: skip
        elif kind == "sessions":
            convs = synthetic_conversations(
                _int(p["n"]), turns=_dist_of(p["turns"]), prompt=_dist_of(p["prompt"]),
                user=_dist_of(p["user"]), output=_dist_of(p["output"]), seed=seed,
            )  # fmt: skip
        else:
            lines, source = _lines(p, sharegpt.SAMPLE_FILE)
            table = sharegpt.parse_conversations(lines, source)
            convs = sharegpt.sample_sessions(table, _int(p["n"]), seed)
        workload = sharegpt.sessions_workload(
            convs,
            seed=seed,
            session_rate=_float_of(p["rate"]),
            rate_scale=rate_scale,
            cv=_float_of(p["cv"]),
            think=_dist_of(p["think_s"]),
            max_context_len=_int(p["max_context"]),
            shared_prefix_len=_int(p.get("system", 0)),
            limit=limit,
        )
    elif kind == "azure":
        workload = _azure(p, rate_scale)
    else:
        lines, source = _lines(p, mooncake.SAMPLE_FILE)
        start, end = _window(p)
        if start > 0 or end < float("inf"):
            lines = mooncake.window_lines(lines, source, start, end)
        workload = mooncake.parse_mooncake(
            lines, source, limit=_opt_int(p["n"]), rate_scale=rate_scale, seed=seed
        )
    if not workload:
        raise ValueError(f"workload spec {spec!r} yields no requests (check n, max_context, the window)")
    return workload[:limit]


def _lines(p: dict[str, Value], sample_file: str) -> tuple[list[str], str]:
    """The ``file=`` trace, else the shipped sample."""
    path = p.get("file")
    if isinstance(path, str):
        return read_lines(path), path
    return sample_lines(sample_file), sample_file


def _dist_of(value: Value) -> Dist:
    assert isinstance(value, Dist)
    return value


def _int(value: Value) -> int:
    assert isinstance(value, int)
    return value


def _opt_int(value: Value) -> int | None:
    return None if value is None else _int(value)


def _float_of(value: Value) -> float:
    assert isinstance(value, (int, float))
    return float(value)


def _window(p: dict[str, Value]) -> tuple[float, float]:
    """``[start_s, start_s + duration_s)`` in trace seconds (no ``duration_s``: to the end)."""
    start = _float_of(p["start_s"])
    return start, start + _float_of(p["duration_s"]) if p["duration_s"] is not None else float("inf")


def _azure(p: dict[str, Value], rate_scale: float) -> Workload:
    lines, source = _lines(p, azure.SAMPLE_FILE)
    full = azure.parse_azure(lines, source, limit=None, rate_scale=1.0)
    start, end = _window(p)
    window = [t for t in full if t.arrival_s is not None and start <= t.arrival_s < end][: _opt_int(p["n"])]
    return tuple(
        dataclasses.replace(t, session_id=f"az{i}", arrival_s=((t.arrival_s or 0.0) - start) / rate_scale)
        for i, t in enumerate(window)
    )
