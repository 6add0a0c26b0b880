"""Per-request records and vLLM-definition summaries shared by the simulator and the live replayer."""

from sglang_ppd.metrics.record import RequestRecord
from sglang_ppd.metrics.result import machine_info, write_result_json
from sglang_ppd.metrics.summary import meets_slo, stats, summarize

__all__ = ["RequestRecord", "machine_info", "meets_slo", "stats", "summarize", "write_result_json"]
