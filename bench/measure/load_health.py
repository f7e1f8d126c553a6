"""What the load generator did (`LoadResult`) and whether the client kept up with it.

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

Part of bench.measure.loadgen (which re-exports these names).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.measure.metrics import RequestRecord
from bench.units import ms_to_ns, ms_to_s, ns_to_ms, ns_to_s

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
    until_rounds: int | None = None  # load.until: rounds of num_requests measured (None: no until)
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
            "until_rounds": self.until_rounds,
        }


async def probe_loop_lag(out: list[tuple[int, float]]) -> None:
    """Sleep LOOP_PROBE_MS at a time and record how late each wake-up is (event-loop lag)."""
    period_ns = ms_to_ns(LOOP_PROBE_MS)
    while True:
        t0 = time.perf_counter_ns()
        await asyncio.sleep(ms_to_s(LOOP_PROBE_MS))
        t1 = time.perf_counter_ns()
        out.append((t1, max(0.0, ns_to_ms(t1 - t0 - period_ns))))


def client_health(res: LoadResult) -> None:
    """Delivered rate, send lag and chunk coalescing of the measured requests -> client_kept_up."""
    recs = [r for r in res.records if r.measured]
    if recs:
        res.measure_start_ns = min(r.send_ns for r in recs)
        res.measure_end_ns = max(r.end_ns for r in recs)
    sends = sorted(r.send_ns for r in recs)
    if res.load_mode != "concurrency" and len(sends) > 1 and sends[-1] > sends[0]:
        res.delivered_rate = (len(sends) - 1) / ns_to_s(sends[-1] - sends[0])
    lags = [ns_to_ms(r.send_ns - r.scheduled_ns) for r in recs if r.scheduled_ns is not None]
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
