"""What differs between the supported SGLang releases: one implementation each, selected at install.

Part of the adapter (:mod:`sglang_ppd.worker.sglang_ext` holds the hooks that call these). Every name
used here is declared in the release's :mod:`~sglang_ppd.worker.contract`; sglang is imported lazily,
inside the methods, so this module loads without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from sglang_ppd.worker.contract import CONTRACTS


def sglang_module(name: str) -> Any:
    """An sglang module, imported when first used (the CPU seam tests replace this)."""
    return importlib.import_module(name)


class Sglang:
    """SGLang 0.5.17: the names and calls that differ between supported releases."""

    version = "0.5.17"

    def tp_rank(self, sched: Any) -> int:
        return int(sched.ps.tp_rank)

    def prefix_len(self, req: Any) -> int:
        return len(req.prefix_indices)

    def remaining_prefill_len(self, req: Any) -> int:
        """Prompt tokens of a (chunked) request whose KV is not allocated yet."""
        extend = req.extend_range
        done = extend.end if extend is not None else self.prefix_len(req)
        return max(len(req.origin_input_ids) - done, 0)

    def check_scheduler(self, sched: Any) -> None:
        if not sched.spec_algorithm.is_none() or sched.enable_hisparse:
            raise RuntimeError("sglang_ppd.worker does not support speculative decoding or hisparse")

    def rejected(self, sched: Any, req: Any) -> None:
        """A local request ``_set_or_validate_priority`` refused (it already told the tokenizer)."""

    def queued(self, sched: Any, req: Any) -> None:
        req.time_stats.set_wait_queue_entry_time()

    def abort_queued(self, sched: Any, req: Any, recv_req: Any) -> None:
        AbortReq = sglang_module("sglang.srt.managers.io_struct").AbortReq  # noqa: N806 - SGLang's name
        # Not yet scheduled: nothing allocated or locked, as for SGLang's own waiting queue.
        sched.ipc_channels.send_to_tokenizer.send_output(AbortReq(rid=req.rid), req)


class Sglang0523(Sglang):
    """SGLang 0.5.23: ranks in the runtime context; ``Req.prefix_len``/``extend_end``; abort cleanup."""

    version = "0.5.23"

    def tp_rank(self, sched: Any) -> int:
        return int(sglang_module("sglang.srt.runtime_context").get_parallel().tp_rank)

    def prefix_len(self, req: Any) -> int:
        return int(req.prefix_len)

    def remaining_prefill_len(self, req: Any) -> int:
        done = req.extend_end if req.extend_end is not None else req.prefix_len
        return max(len(req.origin_input_ids) - done, 0)

    def check_scheduler(self, sched: Any) -> None:
        super().check_scheduler(sched)
        if sched.dynamic_chunk_sizer is not None:
            # It would override the per-iteration chunk size the TBT budget sets.
            raise RuntimeError("sglang_ppd.worker does not support dynamic chunked-prefill sizing")

    def rejected(self, sched: Any, req: Any) -> None:
        sched._release_aborted_request(req)

    def queued(self, sched: Any, req: Any) -> None:
        # As SGLang's own waiting queue stamps it (its prefill-delay accounting reads it).
        req.time_stats.set_wait_queue_entry_time()
        req.arrival_processed_tokens = sched.processed_tokens_counter

    def abort_queued(self, sched: Any, req: Any, recv_req: Any) -> None:
        make_abort_req = sglang_module("sglang.srt.managers.scheduler")._make_abort_req
        sched._release_aborted_request(req)
        sched.send_abort_output(make_abort_req(req, finished_reason=recv_req.finished_reason), req)


IMPLS: dict[str, Sglang] = {impl.version: impl for impl in (Sglang(), Sglang0523())}
assert set(IMPLS) == set(CONTRACTS), "one implementation per contract"
