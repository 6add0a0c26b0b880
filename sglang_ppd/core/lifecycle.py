"""A host's exact record of its own requests on one decode worker, against the last load sample.

Telemetry is a sample taken at one instant; the host (router or simulator) knows exactly which of
its requests started and ended since. :class:`Lifecycle` keeps that difference so that
``core.observe`` can reconcile the sample: a request that finished after the sample is no longer a
resident, one dispatched since is. Hosts call :meth:`on_sample` when a new sample is taken in (the
router: on receipt; the simulator: at capture), :meth:`on_dispatch` when a request is sent to the
worker and :meth:`on_finish` when it ends there (success, failure or abort alike).
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ppd.core.types import CLIP_MAX_NEW_TOKENS


@dataclass(frozen=True, slots=True)
class Since:
    """What changed on one worker since its last sample, by the host's own count."""

    num_finished: int = 0
    """Requests in flight at the sample that have finished since."""
    finished_context_len: int = 0
    """Their prompt tokens (a lower bound of the context they held: conservative for TBT)."""
    num_dispatched: int = 0
    """Requests dispatched after the sample and still in flight."""
    dispatched_context_len: int = 0
    """Their prompt tokens."""
    num_inflight: int = 0
    output_len_sum: int = 0
    """``max_new_tokens`` (clipped as SGLang clips its estimate) summed over the in-flight requests."""

    @property
    def resident_output_len(self) -> int | None:
        """The mean output length of the requests in flight: what a stall is spread over."""
        return self.output_len_sum // self.num_inflight if self.num_inflight else None


NO_CHANGE = Since()


class Lifecycle:
    """The in-flight requests on one worker and the finish/dispatch counts since the last sample."""

    __slots__ = ("_inflight", "_after", "_finished", "_finished_len", "_output_len_sum")

    def __init__(self) -> None:
        self._inflight: dict[str, tuple[int, int]] = {}
        """request id -> (prompt_len, clipped output_len)"""
        self._after: set[str] = set()
        """in-flight requests dispatched after the last sample"""
        self._finished = 0
        self._finished_len = 0
        self._output_len_sum = 0

    def on_sample(self) -> None:
        self._after.clear()
        self._finished = self._finished_len = 0

    def on_dispatch(self, request_id: str, prompt_len: int, output_len: int) -> None:
        if request_id in self._inflight:
            return  # a retry to the same worker under the same id: still one request
        out = min(max(output_len, 1), CLIP_MAX_NEW_TOKENS)
        self._inflight[request_id] = (prompt_len, out)
        self._after.add(request_id)
        self._output_len_sum += out

    def on_finish(self, request_id: str) -> None:
        entry = self._inflight.pop(request_id, None)
        if entry is None:
            return
        self._output_len_sum -= entry[1]
        if request_id in self._after:
            self._after.discard(request_id)
        else:
            self._finished += 1
            self._finished_len += entry[0]

    def since(self) -> Since:
        if not self._inflight and not self._finished:
            return NO_CHANGE
        after = self._after
        return Since(
            num_finished=self._finished,
            finished_context_len=self._finished_len,
            num_dispatched=len(after),
            dispatched_context_len=sum(self._inflight[r][0] for r in after),
            num_inflight=len(self._inflight),
            output_len_sum=self._output_len_sum,
        )
