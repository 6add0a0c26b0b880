"""Client sessions the router has served: each one's last decode worker, bounded.

A request without an ``x-ppd-turn`` header is a session's Turn 2+ when its session id (the
``x-ppd-session-id`` header or SGLang's own ``session_id``) was served before: the latency it is
counted under. Bounded by ``max_sessions``: the least recently served session is evicted first, and
evictions are counted (a Turn 2+ of an evicted session is counted as a Turn 1).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_SESSIONS = 100_000


class SessionMap:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, not {max_sessions}")
        self.max_sessions = max_sessions
        self._decode: OrderedDict[str, str] = OrderedDict()
        self.num_evicted = 0

    def remember(self, session_id: str | None, decode_url: str) -> None:
        """``session_id``'s latest turn was decoded on ``decode_url`` (no session: nothing)."""
        if session_id is None:
            return
        self._decode[session_id] = decode_url
        self._decode.move_to_end(session_id)
        if len(self._decode) > self.max_sessions:
            self._decode.popitem(last=False)
            self.num_evicted += 1

    def decode_of(self, session_id: str | None) -> str | None:
        """The decode worker of the session's latest turn; ``None`` for a session not (or no longer)
        known. A look-up is not a use: it does not keep the session from eviction."""
        return None if session_id is None else self._decode.get(session_id)

    def __len__(self) -> int:
        return len(self._decode)

    def stats(self) -> dict[str, Any]:
        return {"num_sessions": len(self), "max_sessions": self.max_sessions, "num_evicted": self.num_evicted}
