"""Arrival processes: closed-loop concurrency, open-loop Poisson / gamma rates, ramps, trace replay.

The load generator decides *when* each request is sent and which requests are measured; it
never computes latency metrics (bench/measure/metrics.py does).

One point is one continuous stream of requests in three phases:
1. warm-up: the first `warmup_requests` requests (in closed loop at least one full wave, i.e.
   `concurrency` of them, see LoadPoint.effective_warmup), and every request sent during the ramp-up
   (`ramp_s`). Marked `warmup=True`; bench/measure/metrics.py leaves them out.
2. measured: the next `num_requests` requests, or, when `duration_s` is set, every request
   sent in the `duration_s` seconds after the first measured send (num_requests is then unused).
3. cool-down (`cooldown`, default on): the same arrivals continue, unmeasured, until the last
   measured request has finished; then they are cancelled. Their records are kept with
   `cooldown=True` (cancelled ones also `cancelled=True`, collected by the client), because the
   tokens they streamed inside the measured window count toward its throughput (bench/measure/metrics.py).
Why a continuous stream: if the load stopped between phases, the first measured requests would
meet an empty server and the last ones a draining server (a smaller batch, so a faster TPOT and
a lower throughput than the load point really has). Warm-up and cool-down keep the measured
requests inside the steady state.

Arrivals:
- closed loop (`concurrency`): C workers, each sends its next request when its previous one
  ends. With `ramp_s`, worker k starts k x ramp_s / C seconds late (a staggered start).
- open loop (`request_rate`): gamma inter-arrival times with mean 1/rate and shape
  `burstiness` (1.0 = Poisson, < 1 burstier, > 1 more regular), scheduled on absolute deadlines
  (start + cumulative time), so a slow client shows up as lag, not as a silently lower rate.
  `max_concurrency` caps requests in flight (the rest wait in the client).
- rate ramp (`ramp_s`, `ramp_start_rate`): the rate rises linearly from ramp_start_rate (default
  0) to request_rate over ramp_s seconds, then holds. Arrivals are a gamma process in
  "operational time" mapped through the inverse of the cumulative rate
  Lambda(t) = r0 t + (r1 - r0) t^2 / (2 R) (t <= R), so burstiness keeps its meaning.
- trace replay: requests carrying `arrival_s` (bench.measure.workloads trace) are sent at their trace
  times, scaled so the measured rows arrive at `request_rate` on average (`trace_rate` reports
  the trace's own mean rate: set request_rate to it for a literal replay). Each phase starts one
  mean gap after the previous phase's last arrival. Under `concurrency` the times are ignored.
- multi-turn sessions (bench.measure.workloads `Session`, kind multiturn): the unit the phases
  count is a session, not a request. Closed loop: C live sessions, each worker runs one session's
  turns in order (think time between a reply and the next turn keeps the slot: a live session is
  one that has not ended) and then starts the next session. Open loop: arrivals start sessions;
  `max_concurrency` caps requests in flight, not sessions. A session belongs to the phase it was
  started in, so warm-up sessions' later turns are not measured; a failed turn ends its session.

Client health ("could the client keep up?"): every request carries `scheduled_ns`, the time it
should have been sent (its deadline; under max_concurrency, when a slot freed; in closed loop,
when the worker's previous request ended), so `send_ns - scheduled_ns` is lag the client itself
caused. `client_kept_up` is False when the measured requests' p99 lag exceeds LAG_P99_LIMIT_MS, or
when the receive side lags: a probe task measures the event loop's wake-up lateness (how late a chunk
that arrived is read and timestamped) and a median above LOOP_LAG_P50_LIMIT_MS, or most chunks coalesced
while the loop is busy, marks the client as saturated (its TTFT/ITL then measure the client).
`coalesced_chunk_frac` is reported beside it: the share of content chunks that arrived in the
same network read as an earlier one (their ITL samples are ~0). It is a diagnostic, not a verdict:
a busy client causes it, but so does a server that writes tokens in bursts (vLLM on CPU does at
concurrency 1, with an idle client), so it does not by itself mark the client as lagging.
The delivered rate (measured sends per second) is reported next to the requested rate.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import numpy as np

from bench.config.sweep import LoadPoint
from bench.measure.client import RequestSpec
from bench.measure.metrics import RequestRecord
from bench.measure.workloads import Session

SendFn = Callable[[int, RequestSpec, bool, int | None], Awaitable[RequestRecord]]
DoneFn = Callable[[RequestRecord], None]  # called once per finished request
PhaseFn = Callable[[str], Any]  # called with "measure_start" / "measure_end"; may return an awaitable

LAG_P99_LIMIT_MS = 10.0
# Receive side: a probe task sleeps LOOP_PROBE_MS at a time; how late it wakes is the event loop's lag,
# i.e. how long a chunk that arrived could wait before the client read (and timestamped) it.
LOOP_PROBE_MS = 5.0
# The verdict uses the median: a saturated loop is late all the time, while one GC pause or a busy
# neighbour process gives a rare long stall that a p99 over a short point would turn into a false alarm.
LOOP_LAG_P50_LIMIT_MS = 5.0
# Coalescing marks a saturated client only when the loop is also busy (a bursty server coalesces too).
COALESCED_SATURATED_FRAC = 0.5
LOOP_LAG_BUSY_P50_MS = 2.0
# Above this share of coalesced chunks the report warns that ITL samples reflect read batching.
COALESCED_WARN_FRAC = 0.05
COOLDOWN_PREFETCH = 64  # cool-down requests generated before the run (the rest lazily)
# Measured requests generated before the clock starts; the rest are generated lazily as they are sent,
# so memory stays bounded whatever num_requests is (10^15 once exhausted 24 GB before the first send).
MEASURED_PREFETCH = 4096

WARMUP, MEASURED, COOLDOWN = "warmup", "measured", "cooldown"


@dataclass
class LoadResult:
    """What the load generator did: the records (warm-up + measured) and how well it kept time."""

    records: list[RequestRecord] = field(default_factory=list)
    load_mode: str = "concurrency"  # "concurrency" | "rate" | "trace"
    requested_rate: float | None = None
    delivered_rate: float | None = None
    trace_rate: float | None = None  # the trace's own mean rate of the measured rows (req/s)
    max_send_lag_ms: float | None = None
    send_lag_p50_ms: float | None = None
    send_lag_p99_ms: float | None = None
    coalesced_chunk_frac: float | None = None
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    loop_lag_samples: list[tuple[int, float]] = field(default_factory=list, repr=False)  # (t_ns, lag_ms)
    client_kept_up: bool = True
    client_lag_reason: str | None = None
    warmup_sent: int = 0
    measured_sent: int = 0
    cooldown_sent: int = 0
    stop_reason: str | None = None  # "count" | "duration" | "exhausted" (workload ran out)
    measure_start_ns: int | None = None
    measure_end_ns: int | None = None

    def columns(self) -> dict[str, Any]:
        """Flat columns for a PointResult row."""
        return {
            "load_mode": self.load_mode, "requested_rate": self.requested_rate,
            "delivered_rate": self.delivered_rate, "trace_rate": self.trace_rate,
            "max_send_lag_ms": self.max_send_lag_ms, "send_lag_p50_ms": self.send_lag_p50_ms,
            "send_lag_p99_ms": self.send_lag_p99_ms, "coalesced_chunk_frac": self.coalesced_chunk_frac,
            "loop_lag_p50_ms": self.loop_lag_p50_ms, "loop_lag_p99_ms": self.loop_lag_p99_ms,
            "client_kept_up": self.client_kept_up, "client_lag_reason": self.client_lag_reason,
            "warmup_sent": self.warmup_sent, "cooldown_sent": self.cooldown_sent, "stop_reason": self.stop_reason,
        }


def ramp_time_s(u: float, rate: float, ramp_s: float | None = None, start_rate: float = 0.0) -> float:
    """Inverse of the cumulative rate: when (s) the arrival count reaches `u` under a linear ramp.

    Lambda(t) = r0 t + (r1 - r0) t^2 / (2R) for t <= R, then Lambda(R) + r1 (t - R).
    Solving Lambda(t) = u in the stable form t = 2u / (r0 + sqrt(r0^2 + 4au)), a = (r1-r0)/(2R).
    """
    if not ramp_s:
        return u / rate
    r0, r1, big_r = start_rate, rate, ramp_s
    u_ramp = (r0 + r1) * big_r / 2.0
    if u > u_ramp:
        return big_r + (u - u_ramp) / r1
    a = (r1 - r0) / (2.0 * big_r)
    disc = r0 * r0 + 4.0 * a * u
    return 2.0 * u / (r0 + math.sqrt(max(disc, 0.0))) if u > 0 else 0.0


class _Phases:
    """Hands out (phase, index, request, time) in order and knows when the measured phase is over."""

    def __init__(self, lp: LoadPoint, warmup: Iterable[RequestSpec], measured: Iterable[RequestSpec],
                 cooldown: Iterable[RequestSpec] | None, on_phase: PhaseFn | None) -> None:
        self.lp = lp
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
            return self.sent[MEASURED] < lp.num_requests
        return not self.all_done.is_set()

    def _advance(self, reason: str) -> None:
        if self.phase == MEASURED:
            self.measured_closed = True
            self.stop_reason = reason
            if self.outstanding == 0:
                self.all_done.set()
        self.i += 1
        self.pending = self.pending_t = None

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
                        self.measure_deadline_ns = t + int(self.lp.duration_s * 1e9)
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
            if self.measured_closed and self.outstanding == 0:
                self.all_done.set()

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


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def _send_item(send: SendFn, ph: str, idx: int, item: RequestSpec | Session, scheduled_ns: int | None,
                     out: list[RequestRecord], on_done: DoneFn | None) -> None:
    """Send one request, or every turn of a session in order, and keep the records with their phase."""

    def keep(rec: RequestRecord) -> None:
        rec.warmup, rec.cooldown = ph == WARMUP, ph == COOLDOWN
        out.append(rec)
        if ph == MEASURED and on_done is not None:
            on_done(rec)

    if not isinstance(item, Session):
        keep(await send(idx, item, ph != MEASURED, scheduled_ns))
        return
    item.session_id = idx  # unique across phases (bench.measure.loadgen gives each phase its own range)
    for t, turn in enumerate(item.turns):
        if t and turn.think_s > 0:
            await asyncio.sleep(turn.think_s)
        req = item.request(t)  # renders the conversation: prompt building, like a pre-generated prompt, is
        # not send lag, so the turn is due once it is built (the user has "thought" and typed)
        if t:
            scheduled_ns = time.perf_counter_ns()
        rec = await send(idx, req, ph != MEASURED, scheduled_ns)
        keep(rec)
        if not rec.ok:
            return
        item.add_answer(t, rec.output_text)


async def _closed_loop(send: SendFn, plan: _Phases, lp: LoadPoint, out: list[RequestRecord],
                       on_done: DoneFn | None) -> None:
    conc = lp.concurrency or 1
    start = time.perf_counter_ns()
    if lp.ramp_s:
        plan.ramp_end_ns = start + int(lp.ramp_s * 1e9)

    def now_of(ph: str, req: RequestSpec, t: int) -> int:
        return t

    async def worker(k: int) -> None:
        if lp.ramp_s and k:
            await asyncio.sleep(k * lp.ramp_s / conc)
        ready = time.perf_counter_ns()
        while True:
            item = plan.next(time.perf_counter_ns(), now_of)
            if item is None:
                return
            ph, idx, req, _ = item
            try:
                await _send_item(send, ph, idx, req, ready, out, on_done)
            except Exception as e:
                plan.fail(e)
                return
            ready = time.perf_counter_ns()
            plan.finished(ph)

    workers = [asyncio.create_task(worker(k)) for k in range(conc)]
    await _until_measured_done(plan, workers)


async def _until_measured_done(plan: _Phases, tasks: list[asyncio.Task[Any]] | set[asyncio.Task[Any]]) -> None:
    """Wait for the last measured request, then end the cool-down (cancel what is left)."""
    waiter = asyncio.ensure_future(plan.all_done.wait())
    try:
        while not plan.all_done.is_set():
            live = [t for t in tasks if not t.done()]
            if not live:
                break
            await asyncio.wait([waiter, *live], return_when=asyncio.FIRST_COMPLETED)
        if plan.error is None:
            await plan.end_hook()
    finally:
        waiter.cancel()
        await _cancel(list(tasks))


async def _open_loop(send: SendFn, plan: _Phases, lp: LoadPoint, seed: int, trace_scale: float,
                     out: list[RequestRecord], on_done: DoneFn | None) -> None:
    assert lp.request_rate is not None
    rng = random.Random(seed)
    shape = lp.burstiness
    sem = asyncio.Semaphore(lp.max_concurrency) if lp.max_concurrency else None
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter_ns()
    if lp.ramp_s:
        plan.ramp_end_ns = start + int(lp.ramp_s * 1e9)
    u = 0.0

    def time_of(ph: str, req: RequestSpec, t_cand: int) -> int:
        if req.arrival_s is None:
            return t_cand
        return plan.base_ns[ph] + int(req.arrival_s * trace_scale * 1e9)

    async def limited(idx: int, req: RequestSpec, warm: bool, when: int | None) -> RequestRecord:
        assert sem is not None
        async with sem:
            return await send(idx, req, warm, max(when or 0, time.perf_counter_ns()))

    async def one(ph: str, idx: int, req: RequestSpec | Session, when: int) -> None:
        try:
            await _send_item(send if sem is None else limited, ph, idx, req, when, out, on_done)
        except Exception as e:
            plan.fail(e)
            return
        plan.finished(ph)

    plan.phase_gap_ns = int(1e9 / lp.request_rate)
    while not plan.all_done.is_set():
        u += rng.gammavariate(shape, 1.0 / shape)  # unit-mean gaps in operational time
        t_cand = start + int(ramp_time_s(u, lp.request_rate, lp.ramp_s, lp.ramp_start_rate or 0.0) * 1e9)
        item = plan.next(t_cand, time_of)
        if item is None:
            break
        ph, idx, req, when = item
        delay = (when - time.perf_counter_ns()) / 1e9
        if delay > 0:
            if ph == COOLDOWN:  # stop waiting as soon as the measured phase is over
                try:
                    await asyncio.wait_for(plan.all_done.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(delay)
        if plan.error is not None:
            break
        task = asyncio.create_task(one(ph, idx, req, when))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await _until_measured_done(plan, tasks)


async def run_load(send: SendFn, warmup: Iterable[RequestSpec], measured: Iterable[RequestSpec], lp: LoadPoint,
                   seed: int = 0, on_done: DoneFn | None = None, *,
                   cooldown: Iterable[RequestSpec] | None = None, on_phase: PhaseFn | None = None) -> LoadResult:
    """Run one point: warm-up, measured and cool-down phases as one continuous stream.

    `warmup`, `measured` and `cooldown` may be lists or (endless) iterators; the phase lengths
    come from `lp`. Cool-down happens only when `cooldown` requests are given and lp.cooldown.
    `on_phase("measure_start")` runs beside the load when the first measured request is sent;
    `on_phase("measure_end")` is awaited after the last measured request ends, while the
    cool-down load still runs (a good moment to scrape server gauges under load).
    """
    if lp.duration_s is None:
        if lp.num_requests <= MEASURED_PREFETCH:
            measured = list(islice(measured, lp.num_requests))  # generate before the clock starts
        else:
            meas_iter = iter(measured)
            measured = chain(list(islice(meas_iter, MEASURED_PREFETCH)), meas_iter)
    if not lp.ramp_s:
        warmup = list(islice(warmup, lp.effective_warmup))
    else:
        warm_iter = iter(warmup)
        warmup = chain(list(islice(warm_iter, lp.effective_warmup)), warm_iter)
    if cooldown is not None and lp.cooldown:
        cool_iter = iter(cooldown)
        cooldown = chain(list(islice(cool_iter, COOLDOWN_PREFETCH)), cool_iter)
    else:
        cooldown = None

    res = LoadResult()
    trace_scale = 1.0
    if lp.request_rate is not None:
        res.load_mode, res.requested_rate = "rate", lp.request_rate
        if not isinstance(measured, list):
            it = iter(measured)
            first = next(it, None)
            if first is not None and first.arrival_s is not None:
                measured = [first, *it]  # a trace is finite: read it whole to know its rate
            else:
                measured = chain([first] if first is not None else [], it)
        if isinstance(measured, list) and measured and measured[0].arrival_s is not None:
            res.load_mode = "trace"
            span = measured[-1].arrival_s - measured[0].arrival_s  # type: ignore[operator]
            if len(measured) > 1 and span > 0:
                res.trace_rate = (len(measured) - 1) / span
                trace_scale = res.trace_rate / lp.request_rate
    plan = _Phases(lp, warmup, measured, cooldown, on_phase)
    probe = asyncio.ensure_future(_probe_loop_lag(res.loop_lag_samples))
    try:
        if lp.request_rate is None:
            await _closed_loop(send, plan, lp, res.records, on_done)
        else:
            await _open_loop(send, plan, lp, seed, trace_scale, res.records, on_done)
    finally:
        await _cancel([probe])
    if plan.error is not None:
        raise plan.error
    res.warmup_sent, res.measured_sent, res.cooldown_sent = plan.sent[WARMUP], plan.sent[MEASURED], plan.sent[COOLDOWN]
    res.stop_reason = plan.stop_reason
    _client_health(res)
    return res


async def _probe_loop_lag(out: list[tuple[int, float]]) -> None:
    """Sleep LOOP_PROBE_MS at a time and record how late each wake-up is (event-loop lag)."""
    period_ns = int(LOOP_PROBE_MS * 1e6)
    while True:
        t0 = time.perf_counter_ns()
        await asyncio.sleep(LOOP_PROBE_MS / 1e3)
        t1 = time.perf_counter_ns()
        out.append((t1, max(0.0, (t1 - t0 - period_ns) / 1e6)))


def _client_health(res: LoadResult) -> None:
    """Delivered rate, send lag and chunk coalescing of the measured requests -> client_kept_up."""
    recs = [r for r in res.records if r.measured]
    if recs:
        res.measure_start_ns = min(r.send_ns for r in recs)
        res.measure_end_ns = max(r.end_ns for r in recs)
    sends = sorted(r.send_ns for r in recs)
    if res.load_mode != "concurrency" and len(sends) > 1 and sends[-1] > sends[0]:
        res.delivered_rate = (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9)
    lags = [(r.send_ns - r.scheduled_ns) / 1e6 for r in recs if r.scheduled_ns is not None]
    reasons = []
    if lags:
        arr = np.asarray(lags)
        res.max_send_lag_ms = float(arr.max())
        res.send_lag_p50_ms = float(np.percentile(arr, 50))
        res.send_lag_p99_ms = float(np.percentile(arr, 99))
        if res.send_lag_p99_ms > LAG_P99_LIMIT_MS:
            reasons.append(f"send lag p99 {res.send_lag_p99_ms:.1f} ms > {LAG_P99_LIMIT_MS:g} ms")
    chunks = sum(len(r.chunk_ns) for r in recs)
    if chunks:
        res.coalesced_chunk_frac = sum(r.coalesced_chunks for r in recs) / chunks
    window = [lag for t, lag in res.loop_lag_samples
              if res.measure_start_ns is None or res.measure_start_ns <= t <= (res.measure_end_ns or t)]
    if window:
        arr = np.asarray(window)
        res.loop_lag_p50_ms = float(np.percentile(arr, 50))
        res.loop_lag_p99_ms = float(np.percentile(arr, 99))
        if res.loop_lag_p50_ms > LOOP_LAG_P50_LIMIT_MS:
            reasons.append(f"event-loop lag p50 {res.loop_lag_p50_ms:.1f} ms > {LOOP_LAG_P50_LIMIT_MS:g} ms "
                           "(chunks were read late)")
        elif ((res.coalesced_chunk_frac or 0.0) > COALESCED_SATURATED_FRAC
              and res.loop_lag_p50_ms > LOOP_LAG_BUSY_P50_MS):
            reasons.append(f"{res.coalesced_chunk_frac:.0%} of chunks coalesced with a busy event loop "
                           f"(lag p50 {res.loop_lag_p50_ms:.1f} ms)")
    res.client_kept_up = not reasons
    res.client_lag_reason = "; ".join(reasons) or None
