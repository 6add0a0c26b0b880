"""Built-in sglang_ppd routing policies, registered through the ``sglang_ppd.policies`` entry points.

Shared pieces: :mod:`.estimate` (step-model latency estimates), :mod:`.balance` (load-balanced and
cache-aware PD choice), :mod:`.candidates` (local-capable decode workers, PD route and fallbacks),
:mod:`.reasons` (the route-reason vocabulary) and :class:`.errors.NoRouteError`.
"""

from sglang_ppd_policies.errors import NoRouteError

__all__ = ["NoRouteError"]
