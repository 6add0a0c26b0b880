"""Choosing one request's route: the policy's decision, checked against the live cluster.

The policy proposes; the router disposes. Workers that failed this request, are broken (circuit
open) or unhealthy are excluded, and so are decode workers whose telemetry went silent while
another decode's is fresh (a stopped process keeps its TCP listener but serves nothing). The
snapshot marks excluded workers unhealthy, so ``core.guard`` re-routes local work to them PD, as it
does for a worker whose state is unknown; a route naming an unavailable worker is refused. A policy
that raises answers 503, counted under reason ``policy_error`` and logged once per exception type.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sglang_ppd.core.policy import NoRouteError
from sglang_ppd.core.types import Role, Route, RouteKind
from sglang_ppd.router.health import UNKNOWN_STATE_REASON
from sglang_ppd.router.service import Router

log = logging.getLogger(__name__)


class NoRoute(Exception):
    pass


def choose_route(router: Router, feats: Any, exclude: set[str]) -> Route:
    reg = router.registry
    now_s = time.monotonic()  # one instant for the exclusions and the audit
    exclude = exclude | router.reliability.blocked() | router.reliability.silent_decodes(now_s)
    if not any(w.healthy and w.role is Role.DECODE and w.url not in exclude for w in reg.all()):
        raise NoRoute("no healthy decode worker")
    try:
        route = router.decide(feats, exclude)
    except NoRouteError as exc:  # the policy's "nowhere to go"
        raise NoRoute(f"no route: {exc}") from None
    except Exception as exc:  # anything else is a bug in the (possibly plugin) policy
        _policy_error(router, exc)
        raise NoRoute(f"routing policy {router.policy_name!r} failed: {type(exc).__name__}: {exc}") from None
    d = reg.get(route.decode_worker)
    if d is None or not d.healthy or d.role is not Role.DECODE or d.url in exclude:
        raise NoRoute(f"policy chose unavailable decode worker {route.decode_worker}")
    # ``router.decide`` ran the policy through ``core.guard``: local work only goes to a decode
    # worker whose state is known (fresh telemetry), whatever the policy said.
    router.reliability.num_local_overridden += route.reason == UNKNOWN_STATE_REASON
    if route.kind is RouteKind.PD:
        pw = reg.get(route.prefill_worker or "")
        if pw is None or not pw.healthy or pw.role is not Role.PREFILL or pw.url in exclude:
            raise NoRoute(f"policy chose unavailable prefill worker {route.prefill_worker}")
    router.metrics.count_decision(route.kind.value, route.reason or "unspecified")
    if route.kind is not RouteKind.PD:
        router.reliability.audit_local(d, now_s)
    return route


_logged_policy_errors: set[tuple[int, type]] = set()


def _policy_error(router: Router, exc: Exception) -> None:
    """Count a policy exception (reason ``policy_error``) and log its traceback once per router and type."""
    router.metrics.count_decision("none", "policy_error")
    key = (id(router), type(exc))
    if key not in _logged_policy_errors:
        _logged_policy_errors.add(key)
        log.error("policy %r raised (answering 503; logged once per type)", router.policy_name, exc_info=exc)
