"""One worker's continuous-batching scheduler, free of any clock or event loop.

The simulator drives it from a discrete-event heap and the emulator drives the very same class from
asyncio in real time. The driver loop is::

    it = sched.next_iteration(max_steps)      # None: nothing to run, wait for add_*/kv_arrived
    ... let it.duration_ms pass (sleep or schedule an event) ...
    out = sched.complete(it)                  # first tokens, finished, prefill-done, allocations

Between the two calls the driver may add work (``add_prefill``, ``add_incoming``, ``kv_arrived``,
``add_local``, ``release``); it is picked up by the next iteration. A multi-step iteration (a leap
over decode-only steps, ``max_steps > 1``) may be cut short with :meth:`truncate` when new work
arrives mid-way; real-time drivers simply pass ``max_steps=1``.

Model, after SGLang 0.5.x:
- FCFS waiting queue, chunked prefill under a per-iteration token budget (``chunked_prefill_size``).
- Decode workers mix local-prefill chunks into decode steps (``mix_with_running``) within a TBT
  budget (:mod:`~sglang_ppd.sim.chunk_budget`).
- KV is reserved at admission for the whole request (prompt, plus every output token on decode
  workers) in a :class:`~sglang_ppd.sim.kv_pool.KVPool`: a request waits rather than exceed
  capacity, and nothing is ever retracted. Incoming PD transfers (SGLang's prealloc queue) and
  local prefills are admitted in one FCFS order.
- Decode progress is a step counter (:class:`~sglang_ppd.sim.decode_batch.DecodeBatch`).
- :meth:`BatchScheduler.cancel` (SGLang's ``/abort_request``) takes a request out of any state and
  frees its KV at once; the computed part of its sequence stays cached, as SGLang caches an aborted
  request's KV. An in-flight iteration may still name it: :meth:`complete` skips it.
"""

from __future__ import annotations

from sglang_ppd.core.costmodel import CostProfile
from sglang_ppd.core.types import Role
from sglang_ppd.sim.admission import AdmissionQueue, WorkerRequest
from sglang_ppd.sim.chunk_budget import ChunkBudget
from sglang_ppd.sim.decode_batch import DecodeBatch
from sglang_ppd.sim.iteration import Iteration, LoadStats, Outcome
from sglang_ppd.sim.iteration_time import leap_ms, smoothed, truncate_leap
from sglang_ppd.sim.kv_pool import KVPool
from sglang_ppd.sim.prefix_cache import PrefixCache


class BatchScheduler:
    def __init__(
        self,
        role: Role,
        profile: CostProfile,
        *,
        retain_cache: bool = True,
        kv_capacity_tokens: int | None = None,
        chunked_prefill_size: int | None = None,
        tbt_budget_ms: float | None = None,
        min_chunk_len: int = 64,
    ) -> None:
        self.role = role
        self.profile = profile
        self.kv = KVPool(kv_capacity_tokens or profile.kv_capacity_tokens, retain_cache=retain_cache)
        self.chunk_size = chunked_prefill_size or profile.chunked_prefill_size
        self.tbt_budget_ms = tbt_budget_ms
        self.min_chunk_len = min_chunk_len
        self._reqs: dict[str, WorkerRequest] = {}
        self._queue = AdmissionQueue()
        self._prefilling: list[WorkerRequest] = []
        self._awaiting_kv: set[str] = set()
        self._ready: list[tuple[str, int, int, bool]] = []
        """(request id, context, decode steps left, whether its first step emits its first token)
        joining the batch at the next iteration."""
        self._dec = DecodeBatch()
        self._queued_tokens = 0
        self.busy_ms = 0.0
        self.decode_iter_ms: float | None = None
        self.mixed_iter_ms: float | None = None

    # ---- admission and memory ------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.kv.capacity

    @property
    def cache(self) -> PrefixCache:
        return self.kv.cache

    @property
    def active_tokens(self) -> int:
        return self.kv.active_tokens

    def hit_len(self, session_id: str, prompt_len: int, shared_prefix_len: int = 0) -> int:
        """The exact radix hit a router learns from this worker's KV events."""
        return self.cache.hit_len(session_id, prompt_len, shared_prefix_len)

    @property
    def kv_used_tokens(self) -> int:
        return self.kv.used_tokens

    def _total_len(self, r: WorkerRequest) -> int:
        return r.prompt_len + (r.output_len if self.role is Role.DECODE else 0)

    def _try_admit(self, r: WorkerRequest) -> bool:
        """Reserve the request's KV, evicting LRU cache; False (nothing changed) if it cannot fit."""
        got = self.kv.reserve(r.session_id, r.prompt_len, r.shared_prefix_len, self._total_len(r))
        if got is None:
            return False
        hit, r.alloc_tokens = got
        r.hit_len = min(hit, max(r.prompt_len - 1, 0))
        r.done_len = r.hit_len
        return True

    def _free(self, r: WorkerRequest, keep_len: int) -> None:
        del self._reqs[r.rid]
        self.kv.free(r.alloc_tokens, r.session_id, keep_len)

    def _new(
        self,
        rid: str,
        session_id: str,
        prompt_len: int,
        output_len: int,
        shared: int,
        chunk_len: int | None = None,
    ) -> WorkerRequest:
        if rid in self._reqs:
            raise ValueError(f"request {rid!r} is already on this worker")
        seq = self._queue.next_seq()
        r = WorkerRequest(rid, session_id, prompt_len, output_len, shared, chunk_len, seq=seq)
        if self._total_len(r) > self.capacity:
            raise ValueError(f"request {rid!r} needs {self._total_len(r)} KV tokens > {self.capacity}")
        self._reqs[rid] = r
        return r

    # ---- work from the driver ------------------------------------------------------------------
    def add_prefill(self, rid: str, session_id: str, prompt_len: int, shared_prefix_len: int = 0) -> None:
        """Prefill worker: queue a prompt; its KV stays reserved until :meth:`release`."""
        self._enqueue(self._new(rid, session_id, prompt_len, 0, shared_prefix_len))

    def release(self, rid: str) -> None:
        """Prefill worker: the KV was sent; free it and keep the prompt in the radix cache."""
        r = self._reqs[rid]
        self._free(r, r.prompt_len)

    def add_incoming(
        self, rid: str, session_id: str, prompt_len: int, output_len: int, shared_prefix_len: int = 0
    ) -> tuple[tuple[str, int], ...]:
        """Decode worker: queue a PD transfer for KV preallocation. Returns the transfers allocated
        now (this one and older ones that fit), each with the tokens to send: only the KV not
        already resident here. Later allocations come back in :meth:`complete`'s ``allocated``."""
        self._queue.prealloc.append(self._new(rid, session_id, prompt_len, output_len, shared_prefix_len))
        return tuple(self._drain_prealloc())

    def request_hit_len(self, rid: str) -> int:
        """Prompt tokens an admitted request found in this worker's cache."""
        return self._reqs[rid].hit_len

    def kv_arrived(self, rid: str) -> None:
        """Decode worker: the transfer finished; the request decodes from the next iteration."""
        r = self._reqs[rid]
        self._awaiting_kv.discard(rid)
        self._ready.append((rid, r.prompt_len, r.output_len, True))

    def add_local(
        self,
        rid: str,
        session_id: str,
        prompt_len: int,
        output_len: int,
        shared_prefix_len: int = 0,
        chunk_len: int | None = None,
    ) -> None:
        """Decode worker: prefill here (append over resident history, or a deflected prompt)."""
        self._enqueue(self._new(rid, session_id, prompt_len, output_len, shared_prefix_len, chunk_len))

    def _enqueue(self, r: WorkerRequest) -> None:
        r.queued_est = r.prompt_len - self.cache.hit_len(r.session_id, r.prompt_len, r.shared_prefix_len)
        self._queued_tokens += r.queued_est
        self._queue.waiting.append(r)

    def cancel(self, rid: str) -> bool:
        """Abort a request in any state, freeing its KV reservation now; False if it is not here
        (unknown, finished, or cancelled already). The KV it computed (its radix hit, prefilled
        chunks, decoded tokens) returns to the cache unlocked, as SGLang's abort caches it. On a
        decode worker the freed KV may admit queued transfers: call :meth:`allocate` next."""
        r = self._reqs.get(rid)
        if r is None:
            return False
        if self._queue.withdraw(r):  # never admitted: nothing reserved or taken
            self._queued_tokens -= r.queued_est  # 0 for a transfer
            del self._reqs[rid]
            return True
        keep_len = r.prompt_len  # a prefill worker's done prompt, awaiting release
        if r in self._prefilling:
            self._prefilling.remove(r)
            self._queued_tokens -= r.prompt_len - r.done_len
            keep_len = r.done_len
        elif rid in self._awaiting_kv:
            self._awaiting_kv.discard(rid)
            keep_len = r.hit_len
        elif (ready := next((x for x in self._ready if x[0] == rid), None)) is not None:
            self._ready.remove(ready)
            keep_len = ready[1]
        elif (ctx := self._dec.remove(rid)) is not None:
            keep_len = ctx
        self._free(r, keep_len)
        return True

    def allocate(self) -> tuple[tuple[str, int], ...]:
        """Decode worker: preallocate queued transfers that fit now (after :meth:`cancel`), with the
        tokens to send, as :meth:`add_incoming` returns them."""
        return tuple(self._drain_prealloc())

    def _drain_prealloc(self) -> list[tuple[str, int]]:
        out = []
        while self._queue.transfer_turn() and self._try_admit(self._queue.prealloc[0]):
            r = self._queue.prealloc.popleft()
            self._awaiting_kv.add(r.rid)
            out.append((r.rid, r.prompt_len - r.hit_len))
        return out

    # ---- iterations ----------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self._ready or self._prefilling or self._dec or self._queue.waiting)

    def next_iteration(self, max_steps: int = 1) -> Iteration | None:
        dec = self._dec
        joined = []
        for rid, ctx, steps, emits_first in self._ready:
            dec.join(rid, ctx, steps)
            if emits_first:
                joined.append(rid)
        self._ready.clear()
        num_dec = len(dec)
        ctx = dec.context_tokens
        chunks = self._plan_chunks(num_dec, ctx)
        if not chunks and not num_dec:
            return None
        p = self.profile
        if chunks:
            dur = p.iteration_ms(((n, k) for _, n, k in chunks), num_dec, ctx)
            return Iteration(1, dur, dur, tuple(chunks), tuple(joined), num_dec, ctx)
        n = max(min(dec.steps_to_first_finish(), max_steps), 1)
        first = p.iteration_ms((), num_dec, ctx)
        dur = leap_ms(n, first, p.step.c_kv_ms * num_dec)
        return Iteration(n, dur, first, (), tuple(joined), num_dec, ctx)

    def _plan_chunks(self, num_dec: int, ctx: int) -> list[tuple[str, int, int]]:
        tbt = self.tbt_budget_ms if self.role is Role.DECODE else None
        budget = ChunkBudget(self.profile, self.chunk_size, self.min_chunk_len, tbt, num_dec, ctx)
        chunks: list[tuple[str, int, int]] = []
        while budget.tokens > 0:
            if len(chunks) < len(self._prefilling):
                r = self._prefilling[len(chunks)]
            elif chunks and budget.time_spent:
                break
            elif self._queue.local_turn() and self._try_admit(self._queue.waiting[0]):
                r = self._queue.waiting.popleft()
                self._prefilling.append(r)
                self._queued_tokens += r.prompt_len - r.done_len - r.queued_est
            else:
                break
            n = budget.take(r.prompt_len - r.done_len, r.done_len, r.chunk_len, first=not chunks)
            if n <= 0:
                break
            chunks.append((r.rid, n, r.done_len))
        return chunks

    def truncate(self, it: Iteration, elapsed_ms: float) -> Iteration:
        """Cut a decode leap to the steps that end at or after ``elapsed_ms`` (the step in flight
        finishes). Returns ``it`` unchanged when nothing would be cut."""
        return truncate_leap(it, elapsed_ms, self.profile.step.c_kv_ms * it.num_decodes)

    def complete(self, it: Iteration) -> Outcome:
        self.busy_ms += it.duration_ms
        per_step = it.duration_ms / it.num_steps
        if it.chunks:
            self.mixed_iter_ms = smoothed(self.mixed_iter_ms, per_step)
        else:
            self.decode_iter_ms = smoothed(self.decode_iter_ms, per_step)
        first = [rid for rid in it.joined if rid in self._reqs]  # cancelled mid-iteration: skip
        finished: list[str] = []
        prefill_done: list[str] = []
        if it.num_decodes:
            for rid in self._dec.advance(it.num_steps):
                finished.append(rid)
                done = self._reqs[rid]
                self._free(done, done.prompt_len + done.output_len)
        for rid, n, _ in it.chunks:
            r = self._reqs.get(rid)
            if r is None or r not in self._prefilling:  # cancelled mid-iteration (its id maybe reused)
                continue
            r.done_len += n
            self._queued_tokens -= n
            if r.done_len < r.prompt_len:
                continue
            self._prefilling.remove(r)
            if self.role is Role.PREFILL:
                prefill_done.append(rid)
                continue
            first.append(rid)
            if r.output_len <= 1:
                finished.append(rid)
                self._free(r, r.prompt_len + r.output_len)
            else:
                self._ready.append((rid, r.prompt_len + 1, r.output_len - 1, False))
        allocated = self._drain_prealloc() if self.role is Role.DECODE else []
        return Outcome(tuple(first), tuple(finished), tuple(prefill_done), tuple(allocated))

    # ---- telemetry -----------------------------------------------------------------------------
    def stats(self) -> LoadStats:
        local = len(self._prefilling) + len(self._queue.waiting)
        return LoadStats(
            num_running=len(self._dec) + len(self._prefilling) + len(self._ready),
            num_waiting=len(self._queue) + len(self._awaiting_kv),
            queued_prefill_tokens=self._queued_tokens,
            kv_used_tokens=self.active_tokens,
            kv_capacity_tokens=self.capacity,
            running_context_tokens=self._dec.context_tokens,
            num_local_prefills=local if self.role is Role.DECODE else 0,
            decode_iter_ms=self.decode_iter_ms,
            mixed_iter_ms=self.mixed_iter_ms,
        )

    def audit(self) -> None:
        """Raise if the KV pool is overcommitted or the accounting drifted (tests, debug runs)."""
        self.kv.audit(sum(r.alloc_tokens for r in self._reqs.values()))
        queued = sum(r.queued_est for r in self._queue.waiting)
        queued += sum(r.prompt_len - r.done_len for r in self._prefilling)
        if queued != self._queued_tokens:
            raise AssertionError(f"queued-prefill drift: {self._queued_tokens} != {queued}")
        self._dec.audit()


__all__ = ["BatchScheduler", "Iteration", "LoadStats", "Outcome"]
