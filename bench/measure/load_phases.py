"""The three phases of one point (warm-up, measured, cool-down) as one continuous request stream.

`Phases` hands out the next request of whichever phase is running, numbers it, and knows when the
measured phase is over; bench.measure.loadgen decides when each one is sent (its module docstring
describes the phases).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bench.config.load_spec import LoadPoint
from bench.measure.client import RequestSpec
from bench.units import s_to_ns

PhaseFn = Callable[[str], Any]  # called with "measure_start" / "measure_end"; may return an awaitable
MoreFn = Callable[[], bool]  # load.until: after a round's last measured request, True = measure another round

WARMUP, MEASURED, COOLDOWN = "warmup", "measured", "cooldown"


class Phases:
    """Hands out (phase, index, request, time) in order and knows when the measured phase is over."""

    def __init__(self, lp: LoadPoint, warmup: Iterable[RequestSpec], measured: Iterable[RequestSpec],
                 cooldown: Iterable[RequestSpec] | None, on_phase: PhaseFn | None, more: MoreFn | None = None) -> None:
        self.lp = lp
        self.more = more if lp.until is not None else None
        self.target = lp.num_requests  # measured requests to send: one round, more with load.until
        self.rounds = 1
        self.iters: dict[str, Iterator[RequestSpec]] = {
            WARMUP: iter(warmup), MEASURED: iter(measured), COOLDOWN: iter(cooldown if cooldown is not None else ())}
        self.order = [WARMUP, MEASURED, COOLDOWN]
        self.i = 0
        self.sent = {WARMUP: 0, MEASURED: 0, COOLDOWN: 0}
        self.pending: RequestSpec | None = None
        self.pending_t: int | None = None
        self.base_ns: dict[str, int] = {}
        self.ramp_end_ns: int | None = None
        self.measure_start_ns: int | None = None
        self.measure_deadline_ns: int | None = None
        self.outstanding = 0
        self.measured_closed = False
        self.stop_reason: str | None = None
        self.all_done = asyncio.Event()
        self.error: BaseException | None = None
        self.last_t: int | None = None
        self.phase_gap_ns = 0  # open loop: a new phase's trace rows start one mean gap after the last send
        self.on_phase = on_phase
        self.hook_tasks: list[asyncio.Task[Any]] = []

    @property
    def phase(self) -> str | None:
        return self.order[self.i] if self.i < len(self.order) else None

    def _wants(self, ph: str, t_ns: int) -> bool:
        lp = self.lp
        if ph == WARMUP:
            in_ramp = self.ramp_end_ns is not None and t_ns < self.ramp_end_ns
            return self.sent[WARMUP] < lp.effective_warmup or in_ramp
        if ph == MEASURED:
            if lp.duration_s is not None:
                return self.measure_deadline_ns is None or t_ns < self.measure_deadline_ns
            return self.sent[MEASURED] < self.target
        return not self.all_done.is_set()

    def _advance(self, reason: str) -> None:
        closing = self.phase == MEASURED
        self.i += 1
        self.pending = self.pending_t = None
        if closing:
            self.measured_closed = True
            self.stop_reason = reason
            if self.outstanding == 0 and not self._another_round():
                self.all_done.set()

    def next(self, t_cand: int, time_of: Callable[[str, RequestSpec, int], int]) -> tuple[str, int, RequestSpec,
                                                                                          int] | None:
        while self.phase is not None:
            ph = self.phase
            if self.pending is None:
                if not self._wants(ph, t_cand):
                    self._advance("duration" if self.lp.duration_s is not None else "count")
                    continue
                req = next(self.iters[ph], None)
                if req is None:
                    self._advance("exhausted")
                    continue
                if ph not in self.base_ns:  # where this phase's trace times start
                    self.base_ns[ph] = t_cand if self.last_t is None else max(t_cand, self.last_t + self.phase_gap_ns)
                self.pending, self.pending_t = req, time_of(ph, req, t_cand)
            assert self.pending_t is not None
            if not self._wants(ph, self.pending_t):  # a trace row beyond the duration
                self._advance("duration" if self.lp.duration_s is not None else "count")
                continue
            req, t = self.pending, self.pending_t
            self.pending = self.pending_t = None
            self.last_t = t
            self.sent[ph] += 1
            if ph == WARMUP:
                return ph, -self.sent[WARMUP], req, t
            if ph == MEASURED:
                if self.measure_start_ns is None:
                    self.measure_start_ns = t
                    if self.lp.duration_s is not None:
                        self.measure_deadline_ns = t + s_to_ns(self.lp.duration_s)
                    self._hook("measure_start")
                self.outstanding += 1
                return ph, self.sent[MEASURED] - 1, req, t
            return ph, -1_000_000_000 - self.sent[COOLDOWN], req, t
        return None

    def fail(self, e: BaseException) -> None:
        """A send raised (a harness fault, not a request error): stop the point."""
        if self.error is None:
            self.error = e
        self.all_done.set()

    def finished(self, ph: str) -> None:
        if ph == MEASURED:
            self.outstanding -= 1
            if self.measured_closed and self.outstanding == 0 and not self._another_round():
                self.all_done.set()

    def _another_round(self) -> bool:
        """load.until: reopen the measured phase for one more round (the cool-down load ran meanwhile, so the
        stream never paused) while the interval is too wide and the cap allows; False = the point is done."""
        until = self.lp.until
        if (self.more is None or until is None or self.stop_reason != "count" or self.error is not None
                or self.target >= until.max_requests or not self.more()):
            return False
        self.target = min(self.target + self.lp.num_requests, until.max_requests)
        self.rounds += 1
        self.measured_closed, self.stop_reason = False, None
        self.i = self.order.index(MEASURED)
        self.pending = self.pending_t = None  # a cool-down request drawn but not sent: dropped
        return True

    def _hook(self, name: str) -> None:
        if self.on_phase is None:
            return
        out = self.on_phase(name)
        if inspect.isawaitable(out):  # never block the sender: run it beside the load
            self.hook_tasks.append(asyncio.ensure_future(out))

    async def end_hook(self) -> None:
        if self.on_phase is not None:
            out = self.on_phase("measure_end")
            if inspect.isawaitable(out):
                await out
        if self.hook_tasks:
            await asyncio.gather(*self.hook_tasks, return_exceptions=True)
