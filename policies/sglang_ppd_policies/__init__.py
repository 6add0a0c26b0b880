"""Built-in sglang_ppd routing policies, registered through the ``sglang_ppd.policies`` entry points.

Shared pieces: :mod:`.estimate` (step-model latency estimates), :mod:`.balance` (load-balanced and
cache-aware PD choice), :mod:`.candidates` (local-capable decode workers, PD route and fallbacks),
:mod:`.reasons` (the route-reason vocabulary). A policy with nowhere to route raises
:class:`sglang_ppd.core.policy.NoRouteError`, as a third-party plugin would.
"""
