"""Which workers' KV events attributed stored blocks to a session (SGLang 0.5.20+ ``BlockStored.session_id``).

SGLang sets ``session_id`` on a ``BlockStored`` event from the storing request's own session (its
``session_id`` / ``session_params["id"]``); it is attribution only (the blocks may be shared, and
``BlockRemoved`` does not name sessions). The router offers it to policies as
``RequestFeatures.session_workers``: where this conversation's KV was last stored, a hint beside the
exact prefix hit lengths. Bounded: least recently seen sessions are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict


class KvSessions:
    def __init__(self, max_sessions: int) -> None:
        self._max_sessions = max_sessions
        self._workers: OrderedDict[str, frozenset[str]] = OrderedDict()

    def saw(self, session_id: str, worker_url: str) -> None:
        known = self._workers.get(session_id, frozenset())
        if worker_url not in known:
            self._workers[session_id] = known | {worker_url}
        self._workers.move_to_end(session_id)
        while len(self._workers) > self._max_sessions:
            self._workers.popitem(last=False)

    def forget_worker(self, worker_url: str) -> None:
        """Its cache was cleared (or it left): none of its attributions hold any more."""
        for session_id in [s for s, ws in self._workers.items() if worker_url in ws]:
            rest = self._workers[session_id] - {worker_url}
            if rest:
                self._workers[session_id] = rest
            else:
                del self._workers[session_id]

    def workers(self, session_id: str | None) -> frozenset[str]:
        return frozenset() if session_id is None else self._workers.get(session_id, frozenset())

    def __len__(self) -> int:
        return len(self._workers)
