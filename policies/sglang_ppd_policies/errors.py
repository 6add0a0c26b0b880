"""The one error a built-in policy raises: nowhere to send the request (the router answers 503)."""

from __future__ import annotations


class NoRouteError(RuntimeError):
    """No healthy decode worker, or no healthy prefill worker and no fresh local-capable decode worker."""
