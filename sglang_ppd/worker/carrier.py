"""How the local-prefill request fields travel from HTTP to the decode scheduler.

SGLang 0.5.17's ``GenerateReqInput`` has no ``do_local_prefill`` field (that is draft PR #34773), and
the tokenizer drops unknown body keys. Rather than patching three dataclasses in two processes, the
worker's HTTP middleware moves the router's fields into ``bootstrap_host``, which SGLang already
carries unchanged into the scheduler's ``Req`` and which means nothing for a request that never
waits for a KV transfer. The scheduler extension decodes it back with :func:`decode_tag`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sglang_ppd.protocol.fields import (
    BOOTSTRAP_HOST,
    BOOTSTRAP_ROOM,
    LOCAL_PREFILL,
    LOCAL_PREFILL_CHUNK_LEN,
    ROUTE_KIND,
)

PREFIX = "ppd-local"
_ROUTES = frozenset({"local", "deflect"})


@dataclass(frozen=True, slots=True)
class LocalTag:
    route: str
    """"local" (append-prefill on resident history) or "deflect" (a full prefill)."""
    chunk_len: int | None
    """The router's per-step cap on this request's new prefill tokens; ``None`` = worker's budget."""


def encode_tag(tag: LocalTag) -> str:
    return f"{PREFIX}/{tag.route}/{tag.chunk_len or 0}"


def decode_tag(bootstrap_host: object) -> LocalTag | None:
    """``None`` for anything but a tag written by :func:`encode_tag` (a real PD bootstrap host)."""
    if not isinstance(bootstrap_host, str) or not bootstrap_host.startswith(PREFIX + "/"):
        return None
    parts = bootstrap_host.split("/")
    if len(parts) != 3 or parts[1] not in _ROUTES or not parts[2].isdigit():
        return None
    chunk_len = int(parts[2])
    return LocalTag(route=parts[1], chunk_len=chunk_len or None)


def rewrite_generate_body(body: dict[str, Any], rng: random.Random | None = None) -> bool:
    """Moves the router's local-prefill fields into the carrier, in place. True if the body is local.

    A body without ``do_local_prefill: true`` only loses the (ignored) ppd keys; PD bodies keep
    their bootstrap fields untouched.
    """
    local = body.pop(LOCAL_PREFILL, False) is True
    chunk_len = body.pop(LOCAL_PREFILL_CHUNK_LEN, None)
    route = body.pop(ROUTE_KIND, None)
    if not local:
        return False
    if not isinstance(chunk_len, int) or isinstance(chunk_len, bool) or chunk_len <= 0:
        chunk_len = None
    body[BOOTSTRAP_HOST] = encode_tag(LocalTag(route if route in _ROUTES else "local", chunk_len))
    # SGLang rejects a disaggregated request without a room id, even one that never transfers.
    if body.get(BOOTSTRAP_ROOM) is None:
        body[BOOTSTRAP_ROOM] = (rng or random).getrandbits(63)
    return True
