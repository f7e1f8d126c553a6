"""Arrival processes: closed-loop concurrency and open-loop Poisson / gamma rates.

The load generator only decides *when* each request is sent and which requests are warm-up;
it never computes metrics. Warm-up requests run first (at the point's concurrency) and are
marked `warmup=True` so bench/metrics.py excludes them from the measured window.

Open-loop arrivals are scheduled on absolute deadlines (start + cumulative inter-arrival time),
so a slow client shows up as `send_ns - scheduled_ns` lag instead of silently lowering the rate;
`delivered_rate` is reported next to the requested one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.client import RequestSpec
from bench.config import LoadPoint
from bench.metrics import RequestRecord

SendFn = Callable[[int, RequestSpec, bool, int | None], Awaitable[RequestRecord]]
ProgressFn = Callable[[RequestRecord], None]


@dataclass
class LoadResult:
    records: list[RequestRecord] = field(default_factory=list)
    requested_rate: float | None = None
    delivered_rate: float | None = None
    max_send_lag_ms: float | None = None
    client_kept_up: bool = True


async def _closed_loop(send: SendFn, reqs: Sequence[RequestSpec], concurrency: int, warmup: bool,
                       idx0: int, on_done: ProgressFn | None) -> list[RequestRecord]:
    queue = list(enumerate(reqs, idx0))
    queue.reverse()
    out: list[RequestRecord] = []

    async def worker() -> None:
        while queue:
            i, r = queue.pop()
            rec = await send(i, r, warmup, None)
            out.append(rec)
            if on_done is not None:
                on_done(rec)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(reqs)) or 1)))
    return out


def inter_arrivals(rate: float, burstiness: float, n: int, seed: int) -> list[float]:
    """Gamma inter-arrival gaps with mean 1/rate; shape `burstiness` (1.0 = Poisson)."""
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


async def _open_loop(send: SendFn, reqs: Sequence[RequestSpec], lp: LoadPoint, idx0: int, seed: int,
                     on_done: ProgressFn | None) -> tuple[list[RequestRecord], list[int]]:
    assert lp.request_rate is not None
    gaps = inter_arrivals(lp.request_rate, lp.burstiness, len(reqs), seed)
    sem = asyncio.Semaphore(lp.max_concurrency) if lp.max_concurrency else None
    out: list[RequestRecord] = []
    start = time.perf_counter_ns()
    deadline = start
    tasks = []
    scheduled: list[int] = []

    async def one(i: int, r: RequestSpec, when: int) -> None:
        if sem is not None:
            async with sem:
                rec = await send(i, r, False, when)
        else:
            rec = await send(i, r, False, when)
        out.append(rec)
        if on_done is not None:
            on_done(rec)

    for i, (r, gap) in enumerate(zip(reqs, gaps, strict=True), idx0):
        offset_ns = int(r.arrival_s * 1e9) if r.arrival_s is not None else None
        deadline = start + offset_ns if offset_ns is not None else deadline + int(gap * 1e9)
        delay = (deadline - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled.append(deadline)
        tasks.append(asyncio.create_task(one(i, r, deadline)))
    await asyncio.gather(*tasks)
    return out, scheduled


async def run_load(send: SendFn, warmup: Sequence[RequestSpec], measured: Sequence[RequestSpec],
                   lp: LoadPoint, seed: int = 0, on_done: ProgressFn | None = None) -> LoadResult:
    """Warm-up first (excluded from metrics), then the measured requests under the point's arrivals."""
    res = LoadResult(requested_rate=lp.request_rate)
    conc = lp.concurrency or lp.max_concurrency or max(1, len(warmup))
    if warmup:
        res.records += await _closed_loop(send, warmup, conc, True, -len(warmup), None)
    if lp.concurrency is not None:
        res.records += await _closed_loop(send, measured, lp.concurrency, False, 0, on_done)
        return res
    recs, _ = await _open_loop(send, measured, lp, 0, seed, on_done)
    res.records += recs
    sends = sorted(r.send_ns for r in recs)
    if len(sends) > 1:
        res.delivered_rate = (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9)
    lags = [(r.send_ns - r.scheduled_ns) / 1e6 for r in recs if r.scheduled_ns is not None]
    res.max_send_lag_ms = max(lags) if lags else None
    # The client kept up if no request left more than 10 ms after its scheduled time.
    res.client_kept_up = res.max_send_lag_ms is None or res.max_send_lag_ms <= 10.0
    return res
