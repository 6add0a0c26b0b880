"""Request-body fields the router adds when it dispatches to SGLang workers.

PD route: SGLang's own bootstrap fields go to BOTH the prefill and the decode server, exactly as
sglang_router / mini_lb do. Local and deflected routes go to one PPD-capable decode server with
``do_local_prefill`` set, named after SGLang's draft PR #34773 ("conditional aggregation"); a stock
server with that PR's flag gets ``do_local_prefill`` alone (``ServerInfo.upstream_local_prefill``),
the sglang_ppd worker extension also the two ``ppd_*`` fields below.
"""

BOOTSTRAP_HOST = "bootstrap_host"
BOOTSTRAP_PORT = "bootstrap_port"
BOOTSTRAP_ROOM = "bootstrap_room"

LOCAL_PREFILL = "do_local_prefill"
"""bool: prefill this request on the receiving decode server instead of waiting for a KV transfer."""
LOCAL_PREFILL_CHUNK_LEN = "ppd_chunk_len"
"""int, optional: cap on this request's new prefill tokens per mixed decode step (the chunk plan)."""
ROUTE_KIND = "ppd_route"
"""str, informational: "local" or "deflect", for the worker's telemetry and logs."""
