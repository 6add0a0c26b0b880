"""The router's counters and histograms, and their Prometheus text exposition (``/metrics``).

Hand-written to keep the hot path to a dict increment and a bisect. Histograms also keep a bounded
window of recent samples, from which ``/stats`` reports live percentiles.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Iterable

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
)
TPOT_BUCKETS_S = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
DECISION_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
WINDOW = 2048
MAX_REASONS = 256


class Histogram:
    __slots__ = ("buckets", "counts", "sum", "count", "recent")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1
        self.recent.append(value)

    def quantile(self, q: float) -> float | None:
        """Over the recent window (exact order statistic, nearest rank)."""
        if not self.recent:
            return None
        data = sorted(self.recent)
        return data[min(len(data) - 1, max(0, int(round(q * len(data) + 0.5)) - 1))]


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RouterMetrics:
    def __init__(self) -> None:
        self.route_decisions: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.retries = 0
        self.client_aborts = 0
        """Requests whose client went away before the reply ended (not errors; HTTP 499 in ``requests``)."""
        self.rejected: Counter[str] = Counter()
        self.kv_bytes_transferred = 0
        self.kv_bytes_avoided = 0
        self.ttft = {"1": Histogram(LATENCY_BUCKETS_S), "2+": Histogram(LATENCY_BUCKETS_S)}
        self.tpot = {"1": Histogram(TPOT_BUCKETS_S), "2+": Histogram(TPOT_BUCKETS_S)}
        self.decision = Histogram(DECISION_BUCKETS_S)
        """Snapshot build + ``policy.decide``."""
        self.prefix_lookup = Histogram(DECISION_BUCKETS_S)
        """Hashing the prompt's pages and looking up every worker's hit length."""
        self.slo_total = 0
        self.slo_ttft_ok = 0
        self.slo_tpot_ok = 0
        self.slo_both_ok = 0
        self.slo_tpot_total = 0

    def count_decision(self, route: str, reason: str) -> None:
        """Reasons are a label: a plugin policy that puts numbers in them must not grow /metrics
        without bound, so past ``MAX_REASONS`` distinct pairs new ones are counted as "other"."""
        key = (route, reason)
        if key not in self.route_decisions and len(self.route_decisions) >= MAX_REASONS:
            key = (route, "other")
        self.route_decisions[key] += 1

    def record_finish(
        self,
        turn_class: str,
        ttft_s: float | None,
        tpot_s: float | None,
        ttft_slo_s: float,
        tpot_slo_s: float,
    ) -> None:
        if ttft_s is None:
            return
        self.ttft[turn_class].observe(ttft_s)
        ttft_ok = ttft_s <= ttft_slo_s
        tpot_ok = True
        if tpot_s is not None:
            self.tpot[turn_class].observe(tpot_s)
            tpot_ok = tpot_s <= tpot_slo_s
            self.slo_tpot_total += 1
            self.slo_tpot_ok += tpot_ok
        self.slo_total += 1
        self.slo_ttft_ok += ttft_ok
        self.slo_both_ok += ttft_ok and tpot_ok

    def render(self, worker_rows: list[tuple[str, str, float | None, int, int]]) -> str:
        """``worker_rows``: (url, role, telemetry age ms or None, in-flight, indexed blocks)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        family("sglang_ppd_route_decisions_total", "counter", "Routing decisions by route kind and reason.")
        for (route, reason), n in sorted(self.route_decisions.items()):
            out.append(
                f"sglang_ppd_route_decisions_total{_labels([('route', route), ('reason', reason)])} {n}"
            )
        family("sglang_ppd_requests_total", "counter", "Client requests by endpoint and HTTP status.")
        for (endpoint, status), n in sorted(self.requests.items()):
            out.append(
                f"sglang_ppd_requests_total{_labels([('endpoint', endpoint), ('status', str(status))])} {n}"
            )
        family("sglang_ppd_upstream_errors_total", "counter", "Failed upstream calls by worker.")
        for url, n in sorted(self.upstream_errors.items()):
            out.append(f"sglang_ppd_upstream_errors_total{_labels([('worker', url)])} {n}")
        family(
            "sglang_ppd_retries_total", "counter", "Requests retried on another route before a first token."
        )
        out.append(f"sglang_ppd_retries_total {self.retries}")
        family("sglang_ppd_client_aborts_total", "counter", "Requests whose client disconnected first.")
        out.append(f"sglang_ppd_client_aborts_total {self.client_aborts}")
        family("sglang_ppd_rejected_total", "counter", "Requests rejected by the router, by reason.")
        for reason, n in sorted(self.rejected.items()):
            out.append(f"sglang_ppd_rejected_total{_labels([('reason', reason)])} {n}")
        family("sglang_ppd_kv_bytes_transferred_total", "counter", "KV bytes moved P->D by PD routes.")
        out.append(f"sglang_ppd_kv_bytes_transferred_total {self.kv_bytes_transferred}")
        family("sglang_ppd_kv_bytes_avoided_total", "counter", "KV bytes local/deflect routes did not move.")
        out.append(f"sglang_ppd_kv_bytes_avoided_total {self.kv_bytes_avoided}")
        for name, hists, help_ in (
            ("sglang_ppd_ttft_seconds", self.ttft, "Time to first token seen by the router."),
            ("sglang_ppd_tpot_seconds", self.tpot, "Time per output token after the first."),
        ):
            family(name, "histogram", help_)
            for turn, h in hists.items():
                self._histogram(out, name, h, [("turn", turn)])
        family(
            "sglang_ppd_decision_seconds", "histogram", "Snapshot build plus policy decision, per decision."
        )
        self._histogram(out, "sglang_ppd_decision_seconds", self.decision, [])
        family(
            "sglang_ppd_prefix_lookup_seconds", "histogram", "Prompt page hashing plus per-worker hit lookup."
        )
        self._histogram(out, "sglang_ppd_prefix_lookup_seconds", self.prefix_lookup, [])
        family("sglang_ppd_telemetry_age_seconds", "gauge", "Age of each worker's last load telemetry.")
        for url, role, age_ms, _, _ in worker_rows:
            if age_ms is not None:
                out.append(
                    f"sglang_ppd_telemetry_age_seconds{_labels([('worker', url), ('role', role)])} "
                    f"{age_ms / 1000.0:.6f}"
                )
        family("sglang_ppd_worker_inflight", "gauge", "Requests the router has in flight per worker.")
        for url, role, _, inflight, _ in worker_rows:
            out.append(f"sglang_ppd_worker_inflight{_labels([('worker', url), ('role', role)])} {inflight}")
        family("sglang_ppd_prefix_index_blocks", "gauge", "KV blocks in each worker's prefix index.")
        for url, role, _, _, blocks in worker_rows:
            out.append(f"sglang_ppd_prefix_index_blocks{_labels([('worker', url), ('role', role)])} {blocks}")
        return "\n".join(out) + "\n"

    @staticmethod
    def _histogram(out: list[str], name: str, h: Histogram, labels: list[tuple[str, str]]) -> None:
        cum = 0
        for bound, n in zip(h.buckets, h.counts, strict=False):
            cum += n
            out.append(f"{name}_bucket{_labels([*labels, ('le', repr(bound))])} {cum}")
        out.append(f"{name}_bucket{_labels([*labels, ('le', '+Inf')])} {h.count}")
        out.append(f"{name}_sum{_labels(labels)} {h.sum}")
        out.append(f"{name}_count{_labels(labels)} {h.count}")
