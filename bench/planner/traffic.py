"""The harness's client in simulated time: the load generator's arrivals against a scheduler `Cluster`.

Why: a sweep file must mean the same thing to the simulator and to the real engine. So the phases are
THE phase bookkeeping of the load generator (bench.measure.load_phases.Phases: warm-up, measured,
cool-down), the arrivals are bench.measure.loadgen's (closed-loop workers, gamma inter-arrival times in
operational time through `ramp_time_s`, trace times scaled to the requested rate, sessions whose turns
follow the answers after their think time), the requests are the workload generators' own
(bench.measure.workloads), and the output is the client's `RequestRecord`s, which bench.measure.metrics
summarizes exactly as it does a measured point. Nothing here waits: times are simulated seconds
(records carry them as integer nanoseconds from 0).

A simulation that cannot finish (a queue growing without bound) stops when more than `max_waiting`
requests wait in the engines or more than `max_sim_s` simulated seconds have passed, and says so.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from bench.config.load_spec import LoadPoint
from bench.errors import UserInputError
from bench.measure.client import RequestSpec
from bench.measure.load_health import LoadResult
from bench.measure.load_phases import COOLDOWN, MEASURED, WARMUP, Phases
from bench.measure.loadgen import COOLDOWN_PREFETCH, ramp_time_s
from bench.measure.metrics import RequestRecord
from bench.measure.sessions import Session
from bench.planner.cluster import Cluster
from bench.planner.scheduler import SimRequest
from bench.units import NS_PER_S

NS = int(NS_PER_S)  # records carry integer nanoseconds
MakeRequest = Callable[[RequestSpec], SimRequest]


@dataclass
class _Tag:
    """Who sent a request: its phase and index, the worker (closed loop), the session and turn."""

    phase: str
    idx: int
    spec: RequestSpec
    worker: int = -1
    session: Session | None = None
    turn: int = 0
    sent_s: float = 0.0
    scheduled_s: float = 0.0


@dataclass
class SimOutcome:
    """The load result (records and phase counts) and how the simulation ended."""

    load: LoadResult
    stopped: str | None = None  # why it stopped early (saturation), None when it finished
    sim_s: float = 0.0
    steps: int = 0
    preemptions: int = 0
    prefix_hit_tokens: int = 0
    prompt_tokens: int = 0
    engine_output_tokens: float = 0.0


class SimClient:
    """Sends a point's requests into `cluster` as bench.measure.loadgen would, and records them."""

    def __init__(self, cluster: Cluster, lp: LoadPoint, make: MakeRequest, seed: int = 0,
                 answer: Callable[[Session, int, int], str] | None = None, max_waiting: int = 100_000,
                 max_sim_s: float = 86_400.0) -> None:
        self.cluster, self.lp, self.make, self.seed = cluster, lp, make, seed
        self.answer = answer or (lambda s, t, n: " ".join(["ok"] * n))
        self.max_waiting, self.max_sim_s = max_waiting, max_sim_s
        self.finished: list[SimRequest] = []  # records are built at the end (step times are final then)
        self.refused: list[tuple[_Tag, str]] = []
        self.in_flight: dict[int, SimRequest] = {}
        self.held: deque[tuple[_Tag, float]] = deque()  # open loop over max_concurrency: waiting in the client
        self.sending = 0
        self.plan: Phases | None = None
        self.rng = random.Random(seed)
        self.u = 0.0
        self.trace_scale = 1.0

    # sending ------------------------------------------------------------------------------------
    def _send(self, tag: _Tag, now_s: float) -> None:
        cap = self.lp.max_concurrency if self.lp.request_rate is not None else None
        if cap is not None and self.sending >= cap:
            self.held.append((tag, now_s))
            return
        tag.sent_s = now_s
        try:
            req = self.make(tag.spec)
        except UserInputError as e:  # the engine refuses this request (HTTP 400): it fails, the point goes on
            self.refused.append((tag, str(e)))
            self._finish_item(tag, now_s)
            return
        req.tag = tag
        self.sending += 1
        self.in_flight[id(req)] = req
        self.cluster.send(req, now_s)

    def _start_item(self, ph: str, idx: int, item: RequestSpec | Session, at_s: float, worker: int) -> None:
        if isinstance(item, Session):
            item.session_id = idx
            self._send(_Tag(ph, idx, item.request(0), worker, item, 0, scheduled_s=at_s), at_s)
        else:
            self._send(_Tag(ph, idx, item, worker, scheduled_s=at_s), at_s)

    def _on_done(self, req: SimRequest, now_s: float) -> None:
        tag: _Tag = req.tag
        self.in_flight.pop(id(req), None)
        self.sending -= 1
        self.finished.append(req)
        if self.held:
            held, _ = self.held.popleft()
            self._send(held, now_s)
        s = tag.session
        if s is not None and tag.turn + 1 < len(s.turns):
            s.add_answer(tag.turn, self.answer(s, tag.turn, req.output_len))
            nxt = s.turns[tag.turn + 1]
            at = now_s + nxt.think_s
            t2 = _Tag(tag.phase, tag.idx, RequestSpec(prompt=None, input_len=0, output_len=0), tag.worker, s,
                      tag.turn + 1, scheduled_s=at)
            self.cluster.call_at(at, lambda t, t2=t2: self._send_turn(t2, t))
            return
        self._finish_item(tag, now_s)

    def _finish_item(self, tag: _Tag, now_s: float) -> None:
        """A request (or a session's last or failed turn) ended: the phase counts it, its worker goes on."""
        assert self.plan is not None
        self.plan.finished(tag.phase)
        if tag.worker >= 0 and not self.plan.all_done.is_set():
            self._next_closed(tag.worker, now_s)

    def _send_turn(self, tag: _Tag, now_s: float) -> None:
        assert tag.session is not None
        tag.spec = tag.session.request(tag.turn)
        self._send(tag, now_s)

    # arrivals -----------------------------------------------------------------------------------
    def _next_closed(self, worker: int, now_s: float) -> None:
        assert self.plan is not None
        item = self.plan.next(int(now_s * NS), lambda ph, req, t: t)
        if item is not None:
            ph, idx, req, _ = item
            self._start_item(ph, idx, req, now_s, worker)

    def _time_of(self, ph: str, req: RequestSpec, t_cand: int) -> int:
        assert self.plan is not None
        if req.arrival_s is None:
            return t_cand
        return self.plan.base_ns[ph] + int(req.arrival_s * self.trace_scale * NS)

    def _next_open(self, _now_s: float) -> None:
        """Draw the next arrival (gamma gaps in operational time) and schedule its send."""
        lp, plan = self.lp, self.plan
        assert plan is not None and lp.request_rate is not None
        if plan.all_done.is_set():
            return
        self.u += self.rng.gammavariate(lp.burstiness, 1.0 / lp.burstiness)
        t_cand = int(ramp_time_s(self.u, lp.request_rate, lp.ramp_s, lp.ramp_start_rate or 0.0) * NS)
        item = plan.next(t_cand, self._time_of)
        if item is None:
            return
        ph, idx, req, when = item
        at = when / NS
        if ph == COOLDOWN and plan.all_done.is_set():
            return

        def fire(t: float) -> None:
            self._start_item(ph, idx, req, t, -1)
            self._next_open(t)

        self.cluster.call_at(at, fire)

    # run ----------------------------------------------------------------------------------------
    def run(self, warmup: Iterable[Any], measured: Iterable[Any], cooldown: Iterable[Any] | None,
            build_records: bool = True) -> SimOutcome:
        """Simulate the point; `records=False` skips building the per-request records (timing the core)."""
        lp = self.lp
        warm = list(islice(warmup, lp.effective_warmup)) if not lp.ramp_s else warmup
        meas: Any = measured if lp.duration_s is not None else list(islice(measured, lp.num_requests))
        cool = islice(cooldown, COOLDOWN_PREFETCH * 1000) if cooldown is not None and lp.cooldown else None
        res = LoadResult()
        if lp.request_rate is not None:
            res.load_mode, res.requested_rate = "rate", lp.request_rate
            if isinstance(meas, list) and meas and getattr(meas[0], "arrival_s", None) is not None:
                res.load_mode = "trace"
                span = meas[-1].arrival_s - meas[0].arrival_s
                if len(meas) > 1 and span > 0:
                    res.trace_rate = (len(meas) - 1) / span
                    self.trace_scale = res.trace_rate / lp.request_rate
        self.plan = plan = Phases(lp, warm, meas, cool, None)
        if lp.ramp_s:
            plan.ramp_end_ns = int(lp.ramp_s * NS)
        self.cluster.on_done = self._on_done
        if lp.request_rate is None:
            conc = lp.concurrency or 1
            for k in range(conc):
                start = k * lp.ramp_s / conc if lp.ramp_s else 0.0
                self.cluster.call_at(start, lambda t, k=k: self._next_closed(k, t))
        else:
            plan.phase_gap_ns = int(NS / lp.request_rate)
            self.cluster.call_at(0.0, self._next_open)
        stopped = self.cluster.run(self._stop)
        if stopped is None and not plan.all_done.is_set():
            stopped = self._why()
        now = self.cluster.now_s
        records = [self._record(req, req.tag, ok=True) for req in self.finished] if build_records else []
        # cut off when the measured phase ended (or the run stopped)
        for req in self.in_flight.values() if build_records else ():
            rec = self._record(req, req.tag, ok=False, cut_s=now)
            rec.cancelled = True
            rec.error = None if stopped is None else f"not finished: {stopped}"
            records.append(rec)
        for tag, why in self.refused if build_records else ():
            records.append(RequestRecord(
                request_idx=tag.idx, send_ns=int(tag.sent_s * NS), input_tokens=tag.spec.input_len,
                max_tokens=tag.spec.output_len, ok=False, error=why, http_status=400,
                warmup=tag.phase == WARMUP, cooldown=tag.phase == COOLDOWN))
        res.records = records
        res.warmup_sent, res.measured_sent, res.cooldown_sent = plan.sent[WARMUP], plan.sent[MEASURED], \
            plan.sent[COOLDOWN]
        res.stop_reason = plan.stop_reason or ("saturated" if stopped else None)
        res.delivered_rate = _delivered_rate(records)
        res.max_send_lag_ms = res.send_lag_p50_ms = res.send_lag_p99_ms = 0.0
        res.client_kept_up = True
        engines = self.cluster.engines
        return SimOutcome(load=res, stopped=stopped, sim_s=now, steps=sum(e.step for e in engines),
                          preemptions=sum(e.preemptions for e in engines),
                          prefix_hit_tokens=sum(e.prefix_hit_tokens for e in engines),
                          prompt_tokens=sum(e.prompt_tokens for e in engines),
                          engine_output_tokens=sum(e.tokens_out for e in engines))

    def _stop(self) -> bool:
        assert self.plan is not None
        if self.plan.all_done.is_set():
            return True
        return self.cluster.waiting() > self.max_waiting or self.cluster.now_s > self.max_sim_s

    def _why(self) -> str:
        w = self.cluster.waiting()
        if w > self.max_waiting:
            return (f"saturated: {w} requests waiting (more than {self.max_waiting}); the deployment cannot "
                    "serve this load")
        if self.cluster.now_s > self.max_sim_s:
            return f"saturated: not done after {self.max_sim_s:g} simulated seconds"
        return "the simulation ran out of events"

    # records ------------------------------------------------------------------------------------
    def _record(self, req: SimRequest, tag: _Tag, ok: bool, cut_s: float | None = None) -> RequestRecord:
        ends = self.cluster.engines[req.engine].step_end_ns()
        if len(req.token_steps) == 1:
            a, b = req.token_steps[0]
            t = ends[a: b + 1]
        else:
            t = np.concatenate([ends[a: b + 1] for a, b in req.token_steps]) if req.token_steps else ends[:0]
        if cut_s is not None:
            t = t[t <= int(cut_s * NS)]
        chunk_ns = t.tolist()
        n_out = req.output_len if ok else len(chunk_ns)
        rec = RequestRecord(
            request_idx=tag.idx, send_ns=int(tag.sent_s * NS), input_tokens=req.prompt_len, max_tokens=req.output_len,
            chunk_ns=chunk_ns, chunk_tokens=_spread(n_out, len(chunk_ns)),
            done_ns=chunk_ns[-1] if chunk_ns and ok else None, ok=ok,
            usage_prompt_tokens=req.prompt_len if ok else None, usage_completion_tokens=n_out if ok else None,
            warmup=tag.phase == WARMUP, cooldown=tag.phase == COOLDOWN,
            scheduled_ns=int(tag.scheduled_s * NS), cached_input_tokens=req.cached_tokens if ok else None,
            session_id=tag.session.session_id if tag.session is not None else tag.spec.session_id,
            turn=tag.turn + 1 if tag.session is not None else tag.spec.turn,
        )
        return rec


def _spread(tokens: int, chunks: int) -> list[int]:
    """Tokens per chunk: the first chunk one token (the prefill's), the rest spread evenly (speculation
    emits L on average per step)."""
    if chunks <= 0:
        return []
    if chunks == 1:
        return [tokens]
    q, r = divmod(max(tokens - 1, 0), chunks - 1)
    return [1, *([q + 1] * r), *([q] * (chunks - 1 - r))]


def _delivered_rate(records: list[RequestRecord]) -> float | None:
    sends = sorted(r.send_ns for r in records if r.measured)
    if len(sends) < 2 or sends[-1] == sends[0]:
        return None
    return (len(sends) - 1) / ((sends[-1] - sends[0]) / NS)
