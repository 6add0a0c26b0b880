"""One routed attempt's phases, as an explicit state machine: the one place where an attempt's hold
on its workers changes.

::

    PREPARED ─dispatch─► DISPATCHED ─first_token─► FIRST_TOKEN ─streaming─► STREAMING
                         │                         │                         │
                         │                         └──── finish ─► DONE ◄────┤
                         ├─fail (retryable)─► FAILED_RETRYABLE ─retried─► RETRIED
                         └─fail─► FAILED ◄─── fail ──────────────────────────┤ (FIRST_TOKEN too)
    abort: PREPARED, DISPATCHED, FIRST_TOKEN or STREAMING ─► ABORTED

Every transition reports to the workers' :class:`~sglang_ppd.router.workers.WorkerState` through
the attempt's leases: ``dispatch`` takes one per side (in flight, a resident on the decode side, the
breaker's half-open trial); ``first_token`` ends the decode side's local prefill and gives every side
its verdict, success; ``fail`` gives the sides to blame theirs (a worker's own 4xx is an answer: a
success) and ``abort`` gives none (the client left, or the router gave up without blaming a worker:
a trial goes back to the breaker); ``finish``, ``fail`` and ``abort`` release every lease. A phase
change the table does not allow raises :class:`IllegalTransition`: an attempt can never be released
twice, judged after its end, or retried unless it failed before its first token.

The prefill side's reply may end before the attempt does (its KV is on its way): that lease alone
is released then (:meth:`AttemptState.prefill_finished`), whatever the phase.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.workers import Lease, WorkerState


class Phase(enum.Enum):
    PREPARED = "prepared"
    """Routed; nothing sent, no lease."""
    DISPATCHED = "dispatched"
    """Leases taken and the upstream request sent; no token yet."""
    FIRST_TOKEN = "first_token"
    """The first token (or the whole reply) came: every side has worked."""
    STREAMING = "streaming"
    """Later lines of a stream are being relayed."""
    DONE = "done"
    FAILED_RETRYABLE = "failed_retryable"
    """Failed before its first token, by a worker's fault: the request may try another route."""
    RETRIED = "retried"
    """Failed retryable, and the request went on to another attempt."""
    FAILED = "failed"
    """Failed after its first token, or with a failure no retry can mend (a worker's 4xx)."""
    ABORTED = "aborted"
    """The client left (or was cut), or the router gave up on it, before it ended: no verdict."""


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PREPARED: frozenset({Phase.DISPATCHED, Phase.ABORTED}),
    Phase.DISPATCHED: frozenset({Phase.FIRST_TOKEN, Phase.FAILED_RETRYABLE, Phase.FAILED, Phase.ABORTED}),
    Phase.FIRST_TOKEN: frozenset({Phase.STREAMING, Phase.DONE, Phase.FAILED, Phase.ABORTED}),
    Phase.STREAMING: frozenset({Phase.DONE, Phase.FAILED, Phase.ABORTED}),
    Phase.FAILED_RETRYABLE: frozenset({Phase.RETRIED}),
    Phase.RETRIED: frozenset(),
    Phase.DONE: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.ABORTED: frozenset(),
}
"""Which phase may follow which; nothing leaves RETRIED, DONE, FAILED or ABORTED."""

AfterFailure = Callable[[WorkerState, bool, bool], None]
"""``(worker, index_dropped, connection_lost)``: the router's follow-up on a worker to blame
(:meth:`~sglang_ppd.router.health.Reliability.after_failure`: count a dropped index, probe now)."""


class IllegalTransition(RuntimeError):
    pass


class AttemptState:
    """One attempt's phase and its leases on its decode worker and, for PD, its prefill worker."""

    def __init__(
        self,
        rid: str,
        decode: WorkerState,
        prefill: WorkerState | None,
        local: bool,
        prompt_len: int,
        output_len: int,
        after_failure: AfterFailure,
    ) -> None:
        self.rid, self.decode, self.prefill, self.local = rid, decode, prefill, local
        self.prompt_len, self.output_len = prompt_len, output_len
        self.after_failure = after_failure
        self.phase = Phase.PREPARED
        self.decode_lease: Lease | None = None
        self.prefill_lease: Lease | None = None

    @property
    def leases(self) -> tuple[Lease, ...]:
        return tuple(x for x in (self.decode_lease, self.prefill_lease) if x is not None)

    @property
    def live(self) -> bool:
        """Not ended yet: it may still be aborted."""
        return Phase.ABORTED in TRANSITIONS[self.phase]

    def _to(self, target: Phase) -> None:
        if target not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"attempt {self.rid}: {self.phase.value} -> {target.value}")
        self.phase = target

    def dispatch(self) -> None:
        self._to(Phase.DISPATCHED)
        self.decode_lease = self.decode.dispatch(self.rid, self.local, self.prompt_len, self.output_len)
        if self.prefill is not None:
            self.prefill_lease = self.prefill.dispatch(self.rid, False, self.prompt_len, self.output_len)

    def first_token(self) -> None:
        self._to(Phase.FIRST_TOKEN)
        assert self.decode_lease is not None
        self.decode_lease.first_token()
        for lease in self.leases:
            lease.verdict(ok=True)

    def streaming(self) -> None:
        self._to(Phase.STREAMING)

    def finish(self) -> None:
        self._to(Phase.DONE)
        self._release()

    def fail(self, f: UpstreamFailure) -> Phase:
        """The attempt failed with ``f``: FAILED_RETRYABLE before the first token when ``f`` is
        retryable, else FAILED. Only the sides ``f`` names get a verdict. Returns the new phase."""
        retry = f.retryable and self.phase is Phase.DISPATCHED
        self._to(Phase.FAILED_RETRYABLE if retry else Phase.FAILED)
        answered = not f.retryable and f.status < 500
        connection_lost = f.body is None and f.status == 502
        for lease in self.leases:
            if lease.worker.url not in f.workers:
                continue
            if answered:
                lease.verdict(ok=True)
            else:
                dropped = lease.verdict(ok=False, connection_lost=connection_lost)
                self.after_failure(lease.worker, dropped, connection_lost)
        self._release()
        return self.phase

    def retried(self) -> None:
        self._to(Phase.RETRIED)

    def abort(self) -> None:
        self._to(Phase.ABORTED)
        self._release()

    def prefill_finished(self) -> None:
        """The prefill side's reply ended (well or not): its worker holds the request no more."""
        if self.prefill_lease is not None:
            self.prefill_lease.release()

    def _release(self) -> None:
        for lease in self.leases:
            lease.release()
