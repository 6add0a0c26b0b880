"""One decision's view of the request and the cluster, computed in a single pass.

Policies read worker health, freshness and hit lengths many times per decision; computing them once
here (plain lists, a set and a dict) keeps a decision on 16 workers within tens of microseconds.
"""

from __future__ import annotations

from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.types import (
    CLIP_MAX_NEW_TOKENS,
    ClusterSnapshot,
    LinkSnapshot,
    RequestFeatures,
    Role,
    Slo,
    WorkerSnapshot,
)


class View:
    """Healthy P and D workers in snapshot order, the ids with fresh telemetry, and hit lengths
    capped at prompt_len - 1 (as :meth:`RequestFeatures.hit_len`). Raises if no D is healthy."""

    __slots__ = ("req", "slo", "link", "ps", "ds", "fresh", "hits", "kv_need", "_room")

    def __init__(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> None:
        max_age = slo.max_telemetry_age_ms
        ws = snap.workers
        decode = Role.DECODE
        ds = [w for w in ws if w.role is decode and w.healthy]
        if not ds:
            raise NoRouteError("no healthy decode worker")
        # Unhealthy workers may land in ``fresh``: they are in neither list, so it never matters.
        fresh = {w.worker_id for w in ws if (age := w.age_ms) is not None and age <= max_age}
        cap = max(req.prompt_len - 1, 0)
        self.req = req
        self.slo = slo
        self.link: LinkSnapshot = snap.link
        self.ps = [w for w in ws if w.role is not decode and w.healthy]
        self.ds = ds
        self.fresh = fresh
        self.hits = {k: (h if h < cap else cap) for k, h in req.cached_len.items()}
        # Admission reserves the whole request (prompt + max new tokens), the hit included: a
        # resident prefix leaves the evictable cache and becomes the request's own KV.
        self.kv_need = req.prompt_len + min(req.max_new_tokens, CLIP_MAX_NEW_TOKENS)
        self._room: set[str] | None = None  # decode ids with KV room, computed on first use

    def exact_hit(self, worker_id: str, allow_approx: bool) -> int:
        """The hit length, or 0 for an estimated one unless ``allow_approx``."""
        if not allow_approx and worker_id in self.req.approx_workers:
            return 0
        return self.hits.get(worker_id, 0)

    def has_room(self, d: WorkerSnapshot) -> bool:
        """Whether decode worker ``d`` has free KV for this request and for the requests already
        waiting there (each taken to be as large as this one): a worker without it queues the
        request behind them. Unknown KV numbers or stale telemetry count as room."""
        room = self._room
        if room is None:
            room = self._room = self._decode_ids_with_room()
        return d.worker_id in room

    def _decode_ids_with_room(self) -> set[str]:
        need, fresh = self.kv_need, self.fresh
        room = set()
        for d in self.ds:
            used, cap = d.kv_used_tokens, d.kv_capacity_tokens
            full = (
                used is not None
                and cap is not None
                and d.worker_id in fresh
                and cap - used < ((d.num_waiting or 0) + 1) * need
            )
            if not full:
                room.add(d.worker_id)
        return room
