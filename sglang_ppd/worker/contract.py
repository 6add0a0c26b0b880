"""Every SGLang name the worker touches, per supported release: the adapter's contract.

One entry per method the adapter replaces or calls (with its parameter list), per attribute it reads
or writes on SGLang's objects, and per module-level function or object it imports. The adapter
(:mod:`sglang_ppd.worker.sglang_ext`) refuses to install unless the installed source satisfies its
release's contract (:func:`sglang_ppd.worker.source_check.check_source`), and CI checks each contract
against the released wheel. Parameter lists use :func:`~sglang_ppd.worker.source_check.signature_of`'s
form: names in order, ``=`` after a defaulted one. Import-free, so it runs without sglang or torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Method:
    module: str
    cls: str
    name: str
    params: str | None
    """``None``: presence only (the adapter forwards ``*args, **kwargs`` unchanged)."""


@dataclass(frozen=True, slots=True)
class Attr:
    """An instance attribute (``self.<name> = ...`` somewhere in the class or its bases) or property."""

    module: str
    cls: str
    name: str


@dataclass(frozen=True, slots=True)
class Func:
    """A module-level function (``params`` set) or object (class, assignment; ``params=None``)."""

    module: str
    name: str
    params: str | None


@dataclass(frozen=True, slots=True)
class Contract:
    version: str
    entries: tuple[Method | Attr | Func, ...]


SCHED = "sglang.srt.managers.scheduler"
DECODE = "sglang.srt.disaggregation.decode"
BATCH = "sglang.srt.managers.schedule_batch"


def _attrs(module: str, cls: str, names: str) -> tuple[Attr, ...]:
    return tuple(Attr(module, cls, n) for n in names.split())


# Names both supported releases share, with the same parameter lists.
_COMMON: tuple[Method | Attr | Func, ...] = (
    # replaced (hooked) methods
    Method(SCHED, "Scheduler", "_add_request_to_queue", "self, req, is_retracted="),
    Method(SCHED, "Scheduler", "get_next_disagg_decode_batch_to_run", "self, running_batch"),
    Method(SCHED, "Scheduler", "process_decode_queue", "self"),
    Method(SCHED, "Scheduler", "abort_request", "self, recv_req"),
    Method(SCHED, "Scheduler", "is_fully_idle", None),
    Method(SCHED, "Scheduler", "run_batch", None),
    Method(DECODE, "DecodePreallocQueue", "_allocatable_token_budgets", None),
    # called methods
    Method(SCHED, "Scheduler", "_set_or_validate_priority", "self, req"),
    Method(SCHED, "Scheduler", "get_next_batch_to_run", "self, running_batch, last_batch"),
    Method(SCHED, "Scheduler", "get_new_prebuilt_batch", "self, running_batch"),
    Method(DECODE, "DecodeTransferQueue", "pop_transferred", "self, rids_to_check="),
    Method(BATCH, "Req", "init_next_round_input", None),
    Method(BATCH, "ScheduleBatch", "filter_batch", None),
    Method(BATCH, "ScheduleBatch", "merge_batch", "self, other"),
    Method(BATCH, "ScheduleBatch", "is_empty", "self"),
    # attributes read or written
    *_attrs(
        SCHED,
        "Scheduler",
        "spec_algorithm enable_hisparse is_mixed_chunk forward_stream batch_result_processor last_batch "
        "chunked_req disagg_decode_prealloc_queue disagg_decode_transfer_queue tree_cache "
        "max_running_requests waiting_queue chunked_prefill_size max_prefill_tokens max_total_num_tokens "
        "token_to_kv_pool_allocator enable_overlap",
    ),
    *_attrs(DECODE, "DecodePreallocQueue", "scheduler queue retracted_queue num_reserved_decode_tokens"),
    *_attrs(DECODE, "DecodeTransferQueue", "queue"),
    *_attrs(
        BATCH,
        "Req",
        "rid origin_input_ids bootstrap_host time_stats full_untruncated_fill_ids seqlen",
    ),
    *_attrs(BATCH, "ScheduleBatch", "reqs forward_mode decoding_reqs extend_lens prefix_lens"),
    *_attrs(BATCH, "NextBatchPlan", "batch_to_run running_batch"),
    *_attrs("sglang.srt.managers.io_struct", "AbortReq", "rid abort_all finished_reason"),
    # launch path
    Func(SCHED, "run_scheduler_process", None),
    Func("sglang.srt.entrypoints.http_server", "app", None),
    Func("sglang.srt.plugins", "load_plugins", None),
    Func("sglang.srt.server_args", "prepare_server_args", "argv"),
    Func("sglang.srt.utils.common", "kill_process_tree", None),
    Func(
        "sglang.srt.entrypoints.http_server",
        "launch_server",
        "server_args, init_tokenizer_manager_func=, run_scheduler_process_func=, "
        "run_detokenizer_process_func=, execute_warmup_func=, launch_callback=",
    ),
    Func("sglang.srt.managers.io_struct", "AbortReq", None),
)

SGLANG_0_5_17 = Contract(
    "0.5.17",
    (
        *_COMMON,
        Method(SCHED, "Scheduler", "get_num_allocatable_reqs", "self, running_bs"),
        Method(
            SCHED,
            "Scheduler",
            "__init__",
            "self, server_args, port_args, gpu_id, tp_rank, moe_ep_rank, pp_rank, attn_cp_rank, "
            "moe_dp_rank, dp_rank",
        ),  # fmt: skip
        *_attrs(SCHED, "Scheduler", "ps ipc_channels"),
        *_attrs(BATCH, "Req", "prefix_indices extend_range"),
    ),
)

SGLANG_0_5_23 = Contract(
    "0.5.23",
    (
        *_COMMON,
        Method(
            SCHED,
            "Scheduler",
            "get_num_allocatable_reqs",
            "self, running_bs, beam_width=, running_batch=, num_held_rows=",
        ),
        # The ranks moved from the constructor to the runtime context (get_parallel()).
        Method(SCHED, "Scheduler", "__init__", "self, server_args, port_args"),
        Func("sglang.srt.runtime_context", "get_parallel", ""),
        Method(SCHED, "Scheduler", "_release_aborted_request", "self, req"),
        Method(SCHED, "Scheduler", "send_abort_output", "self, abort_req, req"),
        Func(SCHED, "_make_abort_req", "req, finished_reason="),
        *_attrs(SCHED, "Scheduler", "processed_tokens_counter dynamic_chunk_sizer"),
        # Req.prefix_indices became prefix_len; extend_range became extend_end.
        *_attrs(BATCH, "Req", "prefix_len extend_end arrival_processed_tokens"),
    ),
)

CONTRACTS: dict[str, Contract] = {c.version: c for c in (SGLANG_0_5_17, SGLANG_0_5_23)}
