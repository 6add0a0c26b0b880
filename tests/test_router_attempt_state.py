"""The attempt state machine over its transition table, on real worker-state objects: which phase may
follow which, and what each transition does to the workers (in flight, residents, breaker trials)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sglang_ppd.core.types import Role
from sglang_ppd.router.attempt_state import AttemptState, IllegalTransition, Phase
from sglang_ppd.router.breaker import Breaker, BreakerState
from sglang_ppd.router.dispatch import UpstreamFailure
from sglang_ppd.router.workers import WorkerState

P, D = "http://p0:1", "http://d0:1"
P_FAILED = UpstreamFailure("prefill reset", (P,))  # a lost connection: retryable, 502, no body
D_ANSWERED_400 = UpstreamFailure("bad request", (D,), status=400, body=b"{}", retryable=False)
Event = Callable[[AttemptState], object]
EVENTS: dict[str, Event] = {
    "dispatch": AttemptState.dispatch,
    "first_token": AttemptState.first_token,
    "streaming": AttemptState.streaming,
    "finish": AttemptState.finish,
    "fail_retryable": lambda a: a.fail(P_FAILED),
    "fail_answered": lambda a: a.fail(D_ANSWERED_400),
    "retried": AttemptState.retried,
    "abort": AttemptState.abort,
}
PATHS: dict[Phase, tuple[str, ...]] = {
    Phase.PREPARED: (),
    Phase.DISPATCHED: ("dispatch",),
    Phase.FIRST_TOKEN: ("dispatch", "first_token"),
    Phase.STREAMING: ("dispatch", "first_token", "streaming"),
    Phase.DONE: ("dispatch", "first_token", "finish"),
    Phase.FAILED_RETRYABLE: ("dispatch", "fail_retryable"),
    Phase.RETRIED: ("dispatch", "fail_retryable", "retried"),
    Phase.FAILED: ("dispatch", "fail_answered"),
    Phase.ABORTED: ("dispatch", "abort"),
}
# The table written out apart from the code's: (phase, event) -> the phase it leads to; every pair
# not here must raise.
LEGAL: dict[tuple[Phase, str], Phase] = {
    (Phase.PREPARED, "dispatch"): Phase.DISPATCHED,
    (Phase.PREPARED, "abort"): Phase.ABORTED,
    (Phase.DISPATCHED, "first_token"): Phase.FIRST_TOKEN,
    (Phase.DISPATCHED, "fail_retryable"): Phase.FAILED_RETRYABLE,
    (Phase.DISPATCHED, "fail_answered"): Phase.FAILED,
    (Phase.DISPATCHED, "abort"): Phase.ABORTED,
    (Phase.FIRST_TOKEN, "streaming"): Phase.STREAMING,
    (Phase.FIRST_TOKEN, "finish"): Phase.DONE,
    (Phase.FIRST_TOKEN, "fail_retryable"): Phase.FAILED,  # past the first token: never retried
    (Phase.FIRST_TOKEN, "fail_answered"): Phase.FAILED,
    (Phase.FIRST_TOKEN, "abort"): Phase.ABORTED,
    (Phase.STREAMING, "finish"): Phase.DONE,
    (Phase.STREAMING, "fail_retryable"): Phase.FAILED,
    (Phase.STREAMING, "fail_answered"): Phase.FAILED,
    (Phase.STREAMING, "abort"): Phase.ABORTED,
    (Phase.FAILED_RETRYABLE, "retried"): Phase.RETRIED,
}


class Pair:
    """A prefill and a decode worker with breakers on a clock the test moves."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.p = self._worker(P, Role.PREFILL)
        self.d = self._worker(D, Role.DECODE)
        self.blamed: list[str] = []

    def _worker(self, url: str, role: Role) -> WorkerState:
        return WorkerState(url=url, role=role, breaker=Breaker(1, 1.0, clock=lambda: self.now_s))

    def attempt(self, rid: str, prefill: WorkerState | None = None, local: bool = False) -> AttemptState:
        def after_failure(w: WorkerState, _dropped: bool, _lost: bool) -> None:
            self.blamed.append(w.url)

        return AttemptState(rid, self.d, prefill, local, 100, 10, after_failure)

    def half_open(self, w: WorkerState) -> None:
        w.breaker.on_failure()
        self.now_s += 1.5
        assert w.breaker.state is BreakerState.HALF_OPEN and w.breaker.allows()

    def inflight(self) -> tuple[int, int, int]:
        return self.p.num_inflight, self.d.num_inflight, self.d.num_local_inflight


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(EVENTS))
def test_every_phase_and_event_follows_the_table(phase: Phase, event: str) -> None:
    pair = Pair()
    a = pair.attempt("r1", pair.p, local=False)
    for step in PATHS[phase]:
        EVENTS[step](a)
    assert a.phase is phase
    before = pair.inflight()
    target = LEGAL.get((phase, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            EVENTS[event](a)
        assert a.phase is phase and pair.inflight() == before  # nothing changed
    else:
        EVENTS[event](a)
        assert a.phase is target


@pytest.mark.parametrize("phase", [p for p in Phase if p not in (Phase.PREPARED, Phase.DISPATCHED)])
def test_no_lease_outlives_an_attempt_past_its_first_decision(phase: Phase) -> None:
    pair = Pair()
    a = pair.attempt("r1", pair.p, local=True)
    for step in PATHS[phase]:
        EVENTS[step](a)
    ended = phase not in (Phase.FIRST_TOKEN, Phase.STREAMING)
    assert pair.d.num_local_inflight == 0  # a local prefill ends at the first token at the latest
    assert pair.inflight()[:2] == ((0, 0) if ended else (1, 1))
    assert (pair.d.lifecycle.since().num_inflight == 0) is ended


def test_a_client_abort_before_the_first_token_closes_the_lease_and_the_half_open_trial() -> None:
    pair = Pair()
    pair.half_open(pair.d)
    a = pair.attempt("r1", local=True)
    a.dispatch()
    assert pair.inflight() == (0, 1, 1)
    assert not pair.d.breaker.allows()  # this attempt holds the one trial
    a.abort()
    assert pair.inflight() == (0, 0, 0)
    assert pair.d.lifecycle.since().num_inflight == 0
    assert pair.d.breaker.state is BreakerState.HALF_OPEN and pair.d.breaker.allows()  # next may try
    assert pair.blamed == []  # no verdict
    with pytest.raises(IllegalTransition):
        a.abort()  # released once


def test_a_retry_after_a_prefill_failure_takes_new_leases_and_never_double_counts() -> None:
    pair = Pair()
    p1 = pair._worker("http://p1:1", Role.PREFILL)
    first = pair.attempt("r1", pair.p)
    first.dispatch()
    assert pair.inflight() == (1, 1, 0)
    assert first.fail(P_FAILED) is Phase.FAILED_RETRYABLE
    assert pair.inflight() == (0, 0, 0)
    assert pair.blamed == [P]  # the prefill is to blame, not the decode
    assert pair.p.breaker.state is BreakerState.OPEN and pair.d.breaker.state is BreakerState.CLOSED
    first.retried()
    second = pair.attempt("r1-retry", p1)
    second.dispatch()
    assert (p1.num_inflight, pair.d.num_inflight) == (1, 1)
    first.prefill_finished()  # the failed prefill's task ends late: its lease was released already
    assert pair.inflight() == (0, 1, 0) and pair.d.lifecycle.since().num_inflight == 1
    second.first_token()
    second.finish()
    assert (p1.num_inflight, pair.d.num_inflight) == (0, 0)
    assert pair.d.lifecycle.since().num_inflight == 0


def test_the_first_token_is_every_sides_success_and_the_prefill_may_finish_before_it() -> None:
    pair = Pair()
    pair.half_open(pair.p)
    a = pair.attempt("r1", pair.p)
    a.dispatch()
    a.prefill_finished()  # the prefill's reply ended; its KV is on its way
    assert pair.inflight() == (0, 1, 0)
    a.first_token()
    assert pair.p.breaker.state is BreakerState.CLOSED
    a.finish()
    assert pair.inflight() == (0, 0, 0)


def test_a_failure_after_the_first_token_is_not_retryable_and_blames_the_decode() -> None:
    pair = Pair()
    a = pair.attempt("r1", pair.p)
    a.dispatch()
    a.first_token()
    a.streaming()
    assert a.fail(UpstreamFailure("stream broke", (D,))) is Phase.FAILED
    assert pair.blamed == [D] and pair.d.breaker.state is BreakerState.OPEN
    assert pair.inflight() == (0, 0, 0)


def test_a_workers_own_4xx_is_an_answer_that_closes_a_half_open_breaker() -> None:
    pair = Pair()
    pair.half_open(pair.d)
    a = pair.attempt("r1", local=True)
    a.dispatch()
    assert a.fail(D_ANSWERED_400) is Phase.FAILED
    assert pair.d.breaker.state is BreakerState.CLOSED and pair.blamed == []
