"""The field's static local-or-PD rules (Dynamo's conditional disaggregation, llm-d's P/D deciders):
the decode worker is chosen first, then a fixed rule on the prompt, that worker's hit and the
prefill load says whether the prefill runs there or on a P worker.

Decode choice: the local-capable D with the longest exact resident prefix (as ``always_local``), else
the least-loaded local-capable D with fresh telemetry and KV room. A prefill kept on D is LOCAL over
a hit and DEFLECT without one, in the profile's default chunks: these rules have no TBT model, which
is what they are measured for. Otherwise the request takes the ``pd_cache_aware`` path.
"""

from __future__ import annotations

from sglang_ppd.core.types import ClusterSnapshot, RequestFeatures, Route, RouteKind, Slo, WorkerSnapshot
from sglang_ppd_policies.always_local import AlwaysLocalPolicy
from sglang_ppd_policies.balance import decode_keys, least_loaded
from sglang_ppd_policies.candidates import best_resident, local_route, resident_candidates
from sglang_ppd_policies.view import View


def least_loaded_capable(v: View) -> WorkerSnapshot | None:
    """The least-loaded D that may take a local prefill: local-capable, fresh, with KV room."""
    cands = [d for d in v.ds if d.supports_local_prefill and d.worker_id in v.fresh and v.has_room(d)]
    if not cands:
        return None
    return cands[least_loaded(decode_keys(cands, v.fresh))]


class StaticRulePolicy(AlwaysLocalPolicy):
    """``always_local``'s parameters, PD path and resident choice; subclasses implement
    :meth:`keep_local`."""

    def decide(self, req: RequestFeatures, snap: ClusterSnapshot, slo: Slo) -> Route:
        v = View(req, snap, slo)
        cands, why = resident_candidates(v, self._allow_approx)
        if cands:
            d, hit_len = best_resident(v, cands)
        else:
            best = least_loaded_capable(v)
            if best is None:
                return self.pd(v, why)
            d, hit_len = best, 0
        local, reason = self.keep_local(v, d, hit_len)
        if not local:
            return self.pd(v, reason)
        kind = RouteKind.LOCAL if hit_len > 0 else RouteKind.DEFLECT
        return local_route(kind, d, req.prompt_len - hit_len, self.est.chunk_len, reason)

    def keep_local(self, v: View, d: WorkerSnapshot, hit_len: int) -> tuple[bool, str]:
        """Whether the prefill stays on ``d`` (which holds ``hit_len`` tokens of it), and why."""
        raise NotImplementedError
