"""Engines behind a router, in simulated time: the event loop of the scheduler simulation.

Why a module of its own: bench.planner.scheduler models ONE engine's scheduler; a deployment is several
(replicas, or data-parallel attention groups) behind a router, and the client's arrivals, think times and
step ends interleave in one event queue. Events at the same instant run in the order they were queued; an
idle engine starts its next step only after every arrival of that instant is in (a burst is one batch).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from bench.planner.scheduler import EngineSim, SimRequest

OnDone = Callable[[SimRequest, float], None]


class Cluster:
    """Engines (replicas, or DP attention groups) behind a router, driven by one event queue.

    `router`: "round_robin" or "least_loaded" (fewest requests not yet finished). Arrivals and step
    ends are events; a finished request calls `on_done(request, time_s)`, which may send more requests
    (closed loop, next turn) through `send`.
    """

    def __init__(self, engines: list[EngineSim], router: str = "least_loaded") -> None:
        if router not in ("round_robin", "least_loaded"):
            raise ValueError(f"router: one of round_robin, least_loaded (got {router!r})")
        self.engines, self.router = engines, router
        self.events: list[tuple[float, int, int, Any]] = []  # (time, order, kind, payload)
        self._n = 0
        self._rr = 0
        self.now_s = 0.0
        self.on_done: OnDone = lambda r, t: None

    def send(self, req: SimRequest, at_s: float) -> None:
        self._push(at_s, 1, req)

    def call_at(self, at_s: float, fn: Callable[[float], None]) -> None:
        """Run fn(time) at a simulated time (the client's arrivals, think times)."""
        self._push(at_s, 3, fn)

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._n += 1
        heapq.heappush(self.events, (t, self._n, kind, payload))

    def _route(self) -> EngineSim:
        if self.router == "round_robin" or len(self.engines) == 1:
            e = self.engines[self._rr % len(self.engines)]
            self._rr += 1
            return e
        return min(self.engines, key=lambda e: (e.outstanding, e.index))

    def run(self, stop: Callable[[], bool], max_steps: int = 50_000_000) -> str | None:
        """Process events until `stop()` or nothing is left; returns a reason when it stopped early."""
        steps = 0
        while self.events and not stop():
            t, _, kind, payload = heapq.heappop(self.events)
            self.now_s = t
            if kind == 3:
                payload(t)
                continue
            if kind == 1:  # arrival: an idle engine starts once every arrival of this instant is in
                e = self._route()
                e.submit(payload, t)
                if not e.busy and not e.kicked:
                    e.kicked = True
                    self._push(t, 2, e)
                continue
            if kind == 2:
                payload.kicked = False
                if not payload.busy:
                    self._start(payload, t)
                continue
            e = payload
            for req in e.end_step(t):
                self.on_done(req, t)
            self._start(e, t)
            steps += 1
            if steps >= max_steps:
                return f"stopped after {max_steps} engine steps"
        return None

    def _start(self, e: EngineSim, t: float) -> None:
        end = e.start_step(t, self.events[0][0] if self.events else math.inf)
        if end is not None:
            self._push(end, 0, e)

    def waiting(self) -> int:
        return sum(len(e.waiting) + len(e.inbox) for e in self.engines)
