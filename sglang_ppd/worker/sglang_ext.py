"""The adapter: the one module that imports sglang, and the owner of every SGLang name the worker uses.

Local and deflected prefills on an SGLang decode server, in the shape of SGLang draft PR #34773
("conditional aggregation"), as a runtime extension of a supported release instead of a fork:

- A request carrying the local tag (:mod:`~sglang_ppd.worker.carrier`) skips the prealloc/transfer
  path and waits in its own local-prefill queue (:class:`~sglang_ppd.worker.admission.LocalQueue`).
- Each iteration, transferred requests join the running batch as in stock SGLang; then, while local
  work exists, SGLang's own aggregated scheduler (``Scheduler.get_next_batch_to_run``: decode radix
  cache prefix match, ``PrefillAdder``, chunked prefill, ``mix_with_running``) runs over the
  admitted local requests, with the chunk size set to this iteration's TBT budget
  (:mod:`~sglang_ppd.worker.budget`). An append-prefill therefore reuses the conversation's KV, and
  a deflected full prefill is cut into budget-sized chunks mixed into decode steps.
- KV: local requests are admitted only against what the prealloc queue's own budget leaves, and
  the prealloc queue's budget loses what admitted local prefills will still allocate. While a local
  chunked prefill is in flight, no new transfer is preallocated and no retracted request resumed
  (the PR does the same); transfers already under way still complete.
- Retraction of a decoding local request is SGLang's decode retraction (CPU offload, resume);
  aborts reach the local queue too.

Versions: every SGLang name used here is declared in :mod:`~sglang_ppd.worker.contract`, one contract
per supported release; what differs between releases lives in one implementation each
(:mod:`~sglang_ppd.worker.releases`), selected at install once the installed source passed its
contract. Porting to a new release: ``sglang_ppd/worker/PORTING.md``.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from sglang_ppd.worker import versions
from sglang_ppd.worker.admission import LocalEntry
from sglang_ppd.worker.batch_view import describe_batch, telemetry_fields
from sglang_ppd.worker.carrier import decode_tag
from sglang_ppd.worker.contract import CONTRACTS, Method
from sglang_ppd.worker.options import ENV_VAR, PpdOptions
from sglang_ppd.worker.releases import IMPLS, Sglang
from sglang_ppd.worker.source_check import canonical_signature
from sglang_ppd.worker.state import PpdState

logger = logging.getLogger("sglang_ppd.worker")


# Hooked method name -> SGLang's original, filled by install().
_ORIG: dict[str, Callable[..., Any]] = {}
_IMPL: list[Sglang] = [IMPLS["0.5.17"]]
"""The selected implementation (a one-slot list: set once per process by :func:`select`)."""


def select(version: str) -> Sglang:
    """Makes ``version``'s implementation the active one (install does this; tests call it)."""
    _IMPL[0] = IMPLS[version]
    return _IMPL[0]


def impl() -> Sglang:
    return _IMPL[0]


def check_sglang() -> str:
    """The installed sglang's version once its source satisfies that version's contract; otherwise
    :class:`versions.UnsupportedSglangVersion` naming the first difference. Imports no sglang."""
    return versions.check_installed(versions.installed_sglang_version(), versions.installed_sglang_root())


def _check_live(owner: Any, entry: Method) -> None:
    """The imported class still has what the source check saw (no other plugin replaced it)."""
    found = inspect.getattr_static(owner, entry.name, None)
    if not callable(found):
        raise versions.UnsupportedSglangVersion(f"{entry.cls}.{entry.name} is missing at runtime")
    if entry.params is not None and canonical_signature(found) != entry.params:
        raise versions.UnsupportedSglangVersion(
            f"{entry.cls}.{entry.name}({canonical_signature(found)}) differs at runtime from the "
            f"expected ({entry.params})"
        )


def install() -> None:
    """Patches the decode scheduler in this process (idempotent). Call in every scheduler process."""
    if _ORIG:
        return
    version = check_sglang()
    select(version)
    import importlib

    hooked = {
        "_add_request_to_queue": _add_request_to_queue,
        "get_next_disagg_decode_batch_to_run": _get_next_disagg_decode_batch_to_run,
        "process_decode_queue": _process_decode_queue,
        "abort_request": _abort_request,
        "is_fully_idle": _is_fully_idle,
        "run_batch": _run_batch,
        "_allocatable_token_budgets": _allocatable_token_budgets,
    }
    owners = {}
    for entry in CONTRACTS[version].entries:
        if isinstance(entry, Method):
            owner = getattr(importlib.import_module(entry.module), entry.cls)
            _check_live(owner, entry)
            if entry.name in hooked:
                owners[entry.name] = owner
    for name, owner in owners.items():
        _ORIG[name] = getattr(owner, name)
        setattr(owner, name, hooked[name])


def run_scheduler_process(*args: Any, **kwargs: Any) -> Any:
    """SGLang spawns its scheduler; the patches must be installed in that process, before it runs."""
    install()
    from sglang.srt.managers.scheduler import run_scheduler_process as stock

    return stock(*args, **kwargs)


# ----------------------------------------------------------------------------------- per-scheduler state


def _state(sched: Any) -> PpdState:
    st = getattr(sched, "_ppd_state", None)
    if st is None:
        impl().check_scheduler(sched)
        st = PpdState(sched, PpdOptions.from_env(dict(os.environ)), impl().tp_rank(sched))
        sched._ppd_state = st
        sched.is_mixed_chunk = True  # local prefills always ride along the decode batch
    return st


# ------------------------------------------------------------------------------------- request intake


def _add_request_to_queue(self: Any, req: Any, is_retracted: bool = False) -> Any:
    tag = decode_tag(getattr(req, "bootstrap_host", None))
    if tag is None or is_retracted:
        # PD requests, and retracted decodes of any origin (their KV goes through SGLang's CPU offload).
        return _ORIG["_add_request_to_queue"](self, req, is_retracted)
    if not self._set_or_validate_priority(req):
        impl().rejected(self, req)
        return None
    _state(self).queue.push(LocalEntry(req, len(req.origin_input_ids), tag.route, tag.chunk_len))
    impl().queued(self, req)
    return None


def _abort_request(self: Any, recv_req: Any) -> Any:
    gone = _state(self).queue.remove(lambda r: recv_req.abort_all or r.rid.startswith(recv_req.rid))
    for req in gone:
        impl().abort_queued(self, req, recv_req)
    return _ORIG["abort_request"](self, recv_req)


def _run_batch(self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
    """With an iteration log, brackets each forward with CUDA events on the forward stream: the
    calibration data, free of the scheduler-loop jitter that wall intervals carry."""
    st = _state(self)
    info, st.next_info = st.next_info, None
    if st.log is None or info is None:
        return _ORIG["run_batch"](self, batch, *args, **kwargs)
    import torch

    stream = self.forward_stream
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(stream)
    result = _ORIG["run_batch"](self, batch, *args, **kwargs)
    end.record(stream)
    st.gpu_events.append((start, end, info))
    return result


def _is_fully_idle(self: Any, *args: Any, **kwargs: Any) -> bool:
    idle: bool = _ORIG["is_fully_idle"](self, *args, **kwargs)
    return idle and len(_state(self).queue) == 0


# --------------------------------------------------------------------------------------- KV accounting


def _allocatable_token_budgets(self: Any, *args: Any, **kwargs: Any) -> int:
    budget: int = _ORIG["_allocatable_token_budgets"](self, *args, **kwargs)
    st = getattr(self.scheduler, "_ppd_state", None)
    if st is not None:
        budget -= st.queue.reserved_tokens(impl().remaining_prefill_len)
    return budget


def _uncached_len(tree_cache: Any) -> Callable[[Any], int]:
    def f(req: Any) -> int:
        req.init_next_round_input(tree_cache)
        return max(len(req.full_untruncated_fill_ids) - impl().prefix_len(req), 1)

    return f


def _process_decode_queue(self: Any) -> None:
    if self.chunked_req is None:
        _ORIG["process_decode_queue"](self)
        return
    # A local chunk is in flight and will allocate again next iteration: preallocate nothing new.
    self.waiting_queue.extend(self.disagg_decode_transfer_queue.pop_transferred())


# ---------------------------------------------------------------------------------------- scheduling


def _merge_prebuilt(self: Any, running_batch: Any) -> Any:
    """As stock SGLang (0.5.17 and 0.5.23 alike): requests whose KV arrived join the running batch
    (never during a local chunk)."""
    new_prebuilt_batch = self.get_new_prebuilt_batch(running_batch)
    if new_prebuilt_batch:
        self.batch_result_processor.process_batch_result_prebuilt(new_prebuilt_batch)
        new_prebuilt_batch.filter_batch()
        if not new_prebuilt_batch.is_empty():
            if running_batch.is_empty():
                running_batch = new_prebuilt_batch
            else:
                running_batch.merge_batch(new_prebuilt_batch)
    return running_batch


def _local_step(self: Any, st: PpdState, running_batch: Any) -> Any:
    last = self.last_batch
    if self.chunked_req is None:
        running_batch = _merge_prebuilt(self, running_batch)
    num_merging = len(last.reqs) if last is not None and last.forward_mode.is_extend() else 0
    num_decodes_est = len(running_batch.reqs) + num_merging
    head = next(iter(st.queue.inflight.values()), None) or (st.queue.waiting[0] if st.queue.waiting else None)
    tokens = st.policy.tokens(st.model, num_decodes_est > 0, head.chunk_len if head else None)

    admitted: list[LocalEntry[Any]] = []
    if self.chunked_req is None and len(st.queue):
        allocatable = _ORIG["_allocatable_token_budgets"](self.disagg_decode_prealloc_queue)
        admitted = st.queue.admit(
            allocatable - st.queue.reserved_tokens(impl().remaining_prefill_len),
            self.get_num_allocatable_reqs(len(running_batch.reqs)),
            _uncached_len(self.tree_cache),
            max_reqs=self.max_running_requests,
        )

    saved = (self.waiting_queue, self.chunked_prefill_size, self.max_prefill_tokens)
    # PrefillAdder charges one token per mixed decode against both limits.
    self.waiting_queue = [e.req for e in admitted]
    self.chunked_prefill_size = self.max_prefill_tokens = tokens + num_decodes_est
    try:
        plan = self.get_next_batch_to_run(running_batch, last)
    finally:
        not_scheduled = set(map(id, self.waiting_queue))
        self.waiting_queue, self.chunked_prefill_size, self.max_prefill_tokens = saved
    st.queue.push_front([e for e in admitted if id(e.req) in not_scheduled])
    for entry in list(st.queue.inflight.values()):
        if entry.req is not self.chunked_req:
            st.queue.prefill_done(entry.req)
            st.num_local_done += 1
    return plan


def _publish(self: Any, st: PpdState, plan: Any) -> None:
    now = time.monotonic()
    if st.pub is None or now - st.last_pub_s < 0.005:
        return
    st.last_pub_s = now
    st.pub.update(**telemetry_fields(self, st.queue, st.model, st.policy, plan, impl().remaining_prefill_len))


def _get_next_disagg_decode_batch_to_run(self: Any, running_batch: Any) -> Any:
    st = _state(self)
    sample = st.clock.tick(time.perf_counter())
    if sample is not None:
        st.on_sample(sample)
    last = self.last_batch
    local_work = len(st.queue) or self.chunked_req is not None
    if local_work or (last is not None and last.forward_mode.is_extend()):
        plan = _local_step(self, st, running_batch)
    else:
        plan = _ORIG["get_next_disagg_decode_batch_to_run"](self, running_batch)
    batch = plan.batch_to_run
    if batch is None:
        st.clock.idle()
    else:
        new, num_dec, info = describe_batch(batch, st.log is not None)
        st.clock.launched(new, num_dec, info)
        st.next_info = info
    if st.log is not None:
        st.drain_gpu_events()
    _publish(self, st, plan)
    return plan


# ------------------------------------------------------------------------------------------- launch


def launch(opts: PpdOptions, sglang_args: list[str]) -> None:
    """Runs the HTTP server of a PPD-capable decode server in this process (blocks)."""
    check_sglang()
    os.environ[ENV_VAR] = opts.to_env()
    install()
    from sglang.srt.entrypoints import http_server
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils.common import kill_process_tree

    from sglang_ppd.worker.http_mw import PpdHttpMiddleware

    load_plugins()
    server_args = prepare_server_args(sglang_args)
    http_server.app.add_middleware(PpdHttpMiddleware, telemetry_endpoint=opts.telemetry_endpoint)
    logger.warning("sglang_ppd.worker: local prefill enabled, options %s", opts)
    try:
        http_server.launch_server(server_args, run_scheduler_process_func=run_scheduler_process)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
