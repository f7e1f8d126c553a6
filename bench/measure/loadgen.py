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

Client health ("could the client keep up?", `client_kept_up`, send and event-loop lag, chunk
coalescing) is judged in bench.measure.load_health; the phase bookkeeping is in
bench.measure.load_phases. Both are re-exported here.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import chain, islice
from typing import Any

from bench.config.load_spec import LoadPoint
from bench.measure.client import RequestSpec
from bench.measure.load_health import (
    COALESCED_WARN_FRAC,
    LAG_P99_LIMIT_MS,
    LOOP_LAG_P50_LIMIT_MS,
    LoadResult,
    client_health,
    probe_loop_lag,
)
from bench.measure.load_phases import COOLDOWN, MEASURED, WARMUP, PhaseFn, Phases
from bench.measure.metrics import RequestRecord, window_rates
from bench.measure.sessions import Session
from bench.units import NS_PER_S, ns_to_s, s_to_ns

__all__ = [
    "COALESCED_WARN_FRAC", "COOLDOWN_PREFETCH", "LAG_P99_LIMIT_MS", "LOOP_LAG_P50_LIMIT_MS",
    "MEASURED_PREFETCH", "OPEN_LOOP_BACKLOG_CAP", "CannotSustainRate", "DoneFn", "LoadResult", "PhaseFn", "SendFn",
    "client_health", "ramp_time_s", "run_load",
]

SendFn = Callable[[int, RequestSpec, bool, int | None], Awaitable[RequestRecord]]
DoneFn = Callable[[RequestRecord], None]  # called once per finished request

COOLDOWN_PREFETCH = 64  # cool-down requests generated before the run (the rest lazily)
# Open loop: the most requests the client may hold unfinished (sent and not answered, waiting for a
# max_concurrency slot, or due by the schedule and not yet sent) before the point stops with "the endpoint
# cannot sustain N req/s". Why a cap: an endpoint slower than the requested rate makes that backlog grow
# without bound (request_rate 100000 against the simulator grew the harness to 22 GB and ignored Ctrl-C until
# the kernel killed it, issue 25). A sustainable point holds about rate x latency requests (Little's law): 4096
# is e.g. 100 req/s of 40 s requests. max_concurrency above half the cap raises it to 2 x max_concurrency.
OPEN_LOOP_BACKLOG_CAP = 4096
# Measured requests generated before the clock starts; the rest are generated lazily as they are sent,
# so memory stays bounded whatever num_requests is (10^15 once exhausted 24 GB before the first send).
MEASURED_PREFETCH = 4096


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


def throughput_rel_width(records: list[RequestRecord]) -> float | None:
    """(hi - lo) / output_tok_s of the 95% output tok/s interval the row would carry now: the row's own
    function (`metrics.window_rates`), so load.until stops on the figure it reports. None while there is no
    interval (fewer than MIN_REQUESTS measured requests) or no measured request has completed yet."""
    w = window_rates(records)
    rate, lo, hi = w["output_tok_s"], w["output_tok_s_ci_lo"], w["output_tok_s_ci_hi"]
    if lo is None or hi is None or not rate or not w["request_throughput"]:
        return None
    return (hi - lo) / rate


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
    item.session_id = idx  # unique across phases (load_phases.Phases.next gives each phase its own range)
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


async def _closed_loop(send: SendFn, plan: Phases, lp: LoadPoint, out: list[RequestRecord],
                       on_done: DoneFn | None) -> None:
    conc = lp.concurrency or 1
    start = time.perf_counter_ns()
    if lp.ramp_s:
        plan.ramp_end_ns = start + s_to_ns(lp.ramp_s)

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


async def _until_measured_done(plan: Phases, tasks: list[asyncio.Task[Any]] | set[asyncio.Task[Any]]) -> None:
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


async def _open_loop(send: SendFn, plan: Phases, lp: LoadPoint, seed: int, trace_scale: float,
                     out: list[RequestRecord], on_done: DoneFn | None) -> None:
    assert lp.request_rate is not None
    rng = random.Random(seed)
    shape = lp.burstiness
    sem = asyncio.Semaphore(lp.max_concurrency) if lp.max_concurrency else None
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter_ns()
    if lp.ramp_s:
        plan.ramp_end_ns = start + s_to_ns(lp.ramp_s)
    u = 0.0

    def time_of(ph: str, req: RequestSpec, t_cand: int) -> int:
        if req.arrival_s is None:
            return t_cand
        return plan.base_ns[ph] + s_to_ns(req.arrival_s * trace_scale)

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

    plan.phase_gap_ns = int(NS_PER_S / lp.request_rate)
    cap = max(OPEN_LOOP_BACKLOG_CAP, 2 * (lp.max_concurrency or 0))
    while not plan.all_done.is_set():
        u += rng.gammavariate(shape, 1.0 / shape)  # unit-mean gaps in operational time
        t_cand = start + s_to_ns(ramp_time_s(u, lp.request_rate, lp.ramp_s, lp.ramp_start_rate or 0.0))
        item = plan.next(t_cand, time_of)
        if item is None:
            break
        ph, idx, req, when = item
        delay = ns_to_s(when - time.perf_counter_ns())
        if delay > 0:
            if ph == COOLDOWN:  # stop waiting as soon as the measured phase is over
                try:
                    await asyncio.wait_for(plan.all_done.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(delay)
        else:  # behind schedule: still let answers, timers and signals (Ctrl-C) run between sends
            await asyncio.sleep(0)
        if plan.error is not None:
            break
        held = len(tasks) + _due_unsent(when, lp.request_rate)
        if held > cap:
            plan.fail(CannotSustainRate(lp.request_rate, held, ns_to_s(time.perf_counter_ns() - start), cap))
            break
        task = asyncio.create_task(one(ph, idx, req, when))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await _until_measured_done(plan, tasks)


def _wider_than_target(records: list[RequestRecord], lp: LoadPoint) -> bool:
    """load.until: True while the throughput interval is wider than the target (or there is none yet)."""
    assert lp.until is not None
    width = throughput_rel_width(records)
    return width is None or width > lp.until.throughput_rel_ci


class CannotSustainRate(RuntimeError):  # noqa: N818 - the row's error reads "CannotSustainRate: the endpoint ..."
    """The open-loop backlog passed its cap: the point stops instead of queueing without bound."""

    def __init__(self, rate: float, backlog: int, after_s: float, cap: int = OPEN_LOOP_BACKLOG_CAP) -> None:
        super().__init__(f"the endpoint cannot sustain {rate:g} req/s (backlog {backlog} after {after_s:.1f} s; "
                         f"cap {cap} requests unfinished or due and unsent)")


def _due_unsent(when_ns: int, rate: float) -> int:
    """Requests due by the schedule but not yet sent, estimated as how late this send is x the rate (the
    arrivals are generated one at a time, so the ones behind it are not materialised)."""
    late_s = ns_to_s(time.perf_counter_ns() - when_ns)
    return int(late_s * rate) if late_s > 0 else 0


def _prefetch(items: Iterable[Any], n: int) -> Iterator[Any]:
    """The first `n` items generated now (before the clock starts), the rest lazily."""
    it = iter(items)
    return chain(list(islice(it, n)), it)


async def run_load(send: SendFn, warmup: Iterable[RequestSpec], measured: Iterable[RequestSpec], lp: LoadPoint,
                   seed: int = 0, on_done: DoneFn | None = None, *,
                   cooldown: Iterable[RequestSpec] | None = None, on_phase: PhaseFn | None = None,
                   result: LoadResult | None = None) -> LoadResult:
    """Run one point: warm-up, measured and cool-down phases as one continuous stream.

    `warmup`, `measured` and `cooldown` may be lists or (endless) iterators; the phase lengths
    come from `lp`. Cool-down happens only when `cooldown` requests are given and lp.cooldown.
    `on_phase("measure_start")` runs beside the load when the first measured request is sent;
    `on_phase("measure_end")` is awaited after the last measured request ends, while the
    cool-down load still runs (a good moment to scrape server gauges under load).
    `result`, when given, is filled in place: a caller that cancels the load (bench.measure.health's
    watch, when the server dies) still has the records of the requests that finished.
    """
    if lp.duration_s is None:
        cap = lp.until.max_requests if lp.until is not None else lp.num_requests  # every round's requests
        if cap <= MEASURED_PREFETCH:
            measured = list(islice(measured, cap))  # generate before the clock starts
        else:
            measured = _prefetch(measured, MEASURED_PREFETCH)
    if not lp.ramp_s:
        warmup = list(islice(warmup, lp.effective_warmup))
    else:
        warmup = _prefetch(warmup, lp.effective_warmup)
    cooldown = _prefetch(cooldown, COOLDOWN_PREFETCH) if cooldown is not None and lp.cooldown else None

    res = result if result is not None else LoadResult()
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
    plan = Phases(lp, warmup, measured, cooldown, on_phase, more=lambda: _wider_than_target(res.records, lp))
    probe = asyncio.ensure_future(probe_loop_lag(res.loop_lag_samples))
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
    res.until_rounds = plan.rounds if lp.until is not None else None
    client_health(res)
    return res
