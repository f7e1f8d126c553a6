"""Load generator: phases (warm-up / measured / cool-down), closed and open loop, ramps, duration, traces,
client-health flag. A fake `send` (asyncio.sleep, no network) stands in for the server."""

from __future__ import annotations

import asyncio
import math
import statistics
import time

import pytest

from bench.config.sweep import LoadMatrix, LoadPoint
from bench.measure.client import RequestRecord, RequestSpec
from bench.measure.loadgen import LAG_P99_LIMIT_MS, ramp_time_s, run_load

REQ = RequestSpec(prompt="a b", input_len=2, output_len=3)


class FakeServer:
    """Records in-flight counts; each request lasts `service_s(idx)` and yields 3 chunks."""

    def __init__(self, service_s=lambda idx: 0.01, lag_ns: int = 0, coalesced: int = 0) -> None:
        self.service_s = service_s
        self.inflight = 0
        self.max_inflight = 0
        self.events: list[tuple[str, int, bool, int]] = []  # (start|end|cancel, idx, warmup, inflight)
        self.lag_ns = lag_ns
        self.coalesced = coalesced

    async def send(self, idx: int, req: RequestSpec, warmup: bool, scheduled_ns: int | None) -> RequestRecord:
        send_ns = time.perf_counter_ns()
        if scheduled_ns is not None and self.lag_ns:
            send_ns = scheduled_ns + self.lag_ns
        rec = RequestRecord(request_idx=idx, send_ns=send_ns, input_tokens=req.input_len, max_tokens=req.output_len,
                           warmup=warmup, scheduled_ns=scheduled_ns, coalesced_chunks=self.coalesced)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.events.append(("start", idx, warmup, self.inflight))
        try:
            await asyncio.sleep(self.service_s(idx))
        except asyncio.CancelledError:
            self.inflight -= 1
            self.events.append(("cancel", idx, warmup, self.inflight))
            raise
        now = time.perf_counter_ns()
        rec.chunk_ns = [now - 2000, now - 1000, now]
        rec.done_ns, rec.ok = now, True
        self.events.append(("end", idx, warmup, self.inflight))
        self.inflight -= 1
        return rec


def _reqs():
    while True:
        yield REQ


def _run(lp: LoadPoint, server: FakeServer, cooldown: bool = True, **kw):
    return asyncio.run(run_load(server.send, _reqs(), _reqs(), lp, cooldown=_reqs() if cooldown else None, **kw))


def test_closed_loop_phases_counts_and_indices():
    srv = FakeServer()
    res = _run(LoadPoint(concurrency=3, num_requests=12, warmup_requests=4), srv)
    measured = [r for r in res.records if r.measured]
    warm = [r for r in res.records if r.warmup]
    assert sorted(r.request_idx for r in measured) == list(range(12))
    assert sorted(r.request_idx for r in warm) == [-4, -3, -2, -1]
    assert srv.max_inflight == 3
    # warm-up requests are the first four sent
    starts = [e for e in srv.events if e[0] == "start"]
    assert all(e[2] for e in starts[:4]) and not any(e[2] for e in starts[4:16])
    # cool-down requests ran, were cancelled or finished (never left running); the finished ones are kept,
    # flagged, for the window's token count, and are neither measured nor warm-up
    cool = [r for r in res.records if r.cooldown]
    assert res.cooldown_sent >= 1 and len(measured) + len(warm) == 16
    assert len(cool) <= res.cooldown_sent and not any(r.warmup for r in cool)
    assert srv.inflight == 0
    assert res.stop_reason == "count" and res.load_mode == "concurrency"


def test_cooldown_keeps_the_concurrency_until_the_last_measured_request_ends():
    # Measured request 9 is slow; without cool-down the other workers run dry and it finishes alone.
    slow = lambda idx: 0.08 if idx == 9 else 0.005  # noqa: E731
    lp = LoadPoint(concurrency=4, num_requests=10, warmup_requests=0)
    srv = FakeServer(slow)
    _run(lp, srv, cooldown=True)
    end9 = next(e for e in srv.events if e[0] == "end" and e[1] == 9)
    assert end9[3] == 4  # three cool-down requests still in flight beside it
    srv2 = FakeServer(slow)
    _run(lp, srv2, cooldown=False)
    end9 = next(e for e in srv2.events if e[0] == "end" and e[1] == 9)
    assert end9[3] == 1
    lp_off = LoadPoint(concurrency=4, num_requests=10, warmup_requests=0, cooldown=False)
    srv3 = FakeServer(slow)
    res = _run(lp_off, srv3, cooldown=True)  # lp.cooldown=False wins over given cool-down requests
    assert res.cooldown_sent == 0


def test_phase_hooks_run_in_order_and_measure_end_sees_cooldown_load():
    srv = FakeServer(lambda idx: 0.01)
    seen = []

    async def hook(name):
        seen.append((name, srv.inflight))

    _run(LoadPoint(concurrency=3, num_requests=9, warmup_requests=3), srv, on_phase=hook)
    assert [n for n, _ in seen] == ["measure_start", "measure_end"]
    assert seen[1][1] >= 1  # the cool-down load is still on when the end hook runs


def test_closed_loop_duration_bound():
    srv = FakeServer(lambda idx: 0.005)
    res = _run(LoadPoint(concurrency=2, duration_s=0.2, num_requests=3), srv)
    measured = [r for r in res.records if r.measured]
    span_s = (max(r.send_ns for r in measured) - min(r.send_ns for r in measured)) / 1e9
    assert res.stop_reason == "duration"
    assert len(measured) > 3  # num_requests is not a bound when duration_s is set
    assert 0.12 < span_s < 0.2  # every measured send falls inside the 0.2 s window


def test_open_loop_schedule_is_gamma_with_the_requested_mean_and_shape():
    srv = FakeServer(lambda idx: 0.0)
    rate = 4000.0
    res = _run(LoadPoint(request_rate=rate, num_requests=800, warmup_requests=0, burstiness=4.0), srv,
               cooldown=False, seed=7)
    sched = sorted(r.scheduled_ns for r in res.records)
    gaps = [(b - a) / 1e9 for a, b in zip(sched, sched[1:], strict=False)]
    # mean gap 1/rate; gamma(shape k) has coefficient of variation 1/sqrt(k) = 0.5
    assert abs(statistics.mean(gaps) * rate - 1) < 0.08
    assert abs(statistics.pstdev(gaps) / statistics.mean(gaps) - 0.5) < 0.08
    assert res.requested_rate == rate and res.load_mode == "rate"


def test_ramp_time_inverse_of_cumulative_rate_by_hand():
    assert ramp_time_s(5.0, 10.0) == pytest.approx(0.5)
    # r0=0, r1=10, R=2: Lambda(t) = 2.5 t^2 (t <= 2), Lambda(2) = 10
    assert ramp_time_s(2.5, 10.0, 2.0, 0.0) == pytest.approx(1.0)
    assert ramp_time_s(10.0, 10.0, 2.0, 0.0) == pytest.approx(2.0)
    assert ramp_time_s(15.0, 10.0, 2.0, 0.0) == pytest.approx(2.5)  # then 10 req/s
    # r0=2, r1=10, R=2: Lambda(t) = 2t + 2t^2; Lambda(1) = 4
    assert ramp_time_s(4.0, 10.0, 2.0, 2.0) == pytest.approx(1.0)
    # ramping down: r0=10, r1=2, R=2: Lambda(t) = 10t - 2t^2; Lambda(1) = 8
    assert ramp_time_s(8.0, 2.0, 2.0, 10.0) == pytest.approx(1.0)


def test_open_loop_ramp_requests_are_warmup_and_rate_rises():
    srv = FakeServer(lambda idx: 0.0)
    lp = LoadPoint(request_rate=400.0, num_requests=100, warmup_requests=0, ramp_s=0.25, ramp_start_rate=0.0)
    res = _run(lp, srv, seed=3)
    warm = sorted(r.scheduled_ns for r in res.records if r.warmup)
    meas = sorted(r.scheduled_ns for r in res.records if r.measured)
    assert warm and max(warm) < min(meas)
    # Lambda(0.25) = 400 * 0.25 / 2 = 50 expected ramp requests (Poisson: +- 4 sigma ~ 28)
    assert 22 < len(warm) < 78
    # rate rises: the second half of the ramp holds ~3x the requests of the first half
    t0 = min(warm)
    first = sum(1 for t in warm if t - t0 < 0.125e9)
    assert first < len(warm) - first
    assert len(meas) == 100


def test_open_loop_max_concurrency_caps_inflight():
    srv = FakeServer(lambda idx: 0.02)
    res = _run(LoadPoint(request_rate=2000.0, num_requests=40, max_concurrency=3), srv, cooldown=False)
    assert srv.max_inflight == 3
    # the intended send time of a capped request is when its slot freed, so the client is not blamed
    assert res.client_kept_up


def test_trace_arrivals_are_scaled_to_the_requested_rate():
    srv = FakeServer(lambda idx: 0.0)
    trace = [RequestSpec(prompt="a", input_len=1, output_len=1, arrival_s=t) for t in (0.0, 1.0, 1.5, 4.0)]
    res = asyncio.run(run_load(srv.send, [], trace, LoadPoint(request_rate=30.0, num_requests=4)))
    # trace rate = 3 gaps / 4 s = 0.75 req/s; scaled to 30 req/s -> times x 0.025: 0, 25, 37.5, 100 ms
    assert res.load_mode == "trace" and res.trace_rate == pytest.approx(0.75)
    sched = sorted(r.scheduled_ns for r in res.records)
    offsets_ms = [(s - sched[0]) / 1e6 for s in sched]
    assert offsets_ms == pytest.approx([0.0, 25.0, 37.5, 100.0], abs=0.01)


def test_trace_exhausted_stops_the_measured_phase():
    srv = FakeServer(lambda idx: 0.0)
    trace = [RequestSpec(prompt="a", input_len=1, output_len=1, arrival_s=t) for t in (0.0, 0.01)]
    res = asyncio.run(run_load(srv.send, [], iter(trace), LoadPoint(request_rate=100.0, duration_s=5.0)))
    assert res.stop_reason == "exhausted" and len(res.records) == 2


def test_client_lag_flags_the_point_and_coalescing_is_reported():
    lag_ms = LAG_P99_LIMIT_MS + 5
    res = _run(LoadPoint(request_rate=500.0, num_requests=20), FakeServer(lag_ns=int(lag_ms * 1e6)))
    assert not res.client_kept_up and "send lag p99" in res.client_lag_reason
    assert res.send_lag_p99_ms == pytest.approx(lag_ms)
    res = _run(LoadPoint(concurrency=2, num_requests=10), FakeServer(coalesced=1))
    # 1 of every 3 chunks coalesced = 33%: reported, but coalescing alone is not proof of client lag
    assert res.coalesced_chunk_frac == pytest.approx(1 / 3)
    assert res.client_kept_up and res.client_lag_reason is None
    ok = _run(LoadPoint(concurrency=2, num_requests=10), FakeServer())
    assert ok.client_kept_up and ok.coalesced_chunk_frac == 0.0


def test_delivered_rate_is_measured_sends_per_second():
    srv = FakeServer(lambda idx: 0.0)
    res = _run(LoadPoint(request_rate=200.0, num_requests=60), srv, seed=1)
    sends = sorted(r.send_ns for r in res.records if r.measured)
    assert res.delivered_rate == pytest.approx(59 / ((sends[-1] - sends[0]) / 1e9))
    assert 100 < res.delivered_rate < 350  # 60 Poisson arrivals at 200/s


def test_a_failing_send_fails_the_run():
    async def boom(idx, req, warmup, scheduled_ns):
        raise RuntimeError("harness bug")

    with pytest.raises(RuntimeError, match="harness bug"):
        asyncio.run(run_load(boom, [], [REQ] * 3, LoadPoint(concurrency=2, num_requests=3)))
    with pytest.raises(RuntimeError, match="harness bug"):
        asyncio.run(run_load(boom, [], [REQ] * 3, LoadPoint(request_rate=100.0, num_requests=3)))


def test_closed_loop_ramp_staggers_worker_starts():
    srv = FakeServer(lambda idx: 0.2)  # longer than the ramp, so the first four sends are four workers
    res = _run(LoadPoint(concurrency=4, num_requests=8, ramp_s=0.2), srv)
    first_sends = sorted(r.send_ns for r in res.records)[:4]
    # workers start 0, 50, 100, 150 ms apart; requests sent during the ramp are warm-up
    spread_ms = (first_sends[3] - first_sends[0]) / 1e6
    assert 130 < spread_ms < 200
    assert any(r.warmup for r in res.records)


def test_config_ramp_validation_and_matrix_expansion():
    with pytest.raises(ValueError, match="ramp_start_rate needs request_rate and ramp_s"):
        LoadPoint(concurrency=2, ramp_start_rate=1.0, ramp_s=1.0)
    with pytest.raises(ValueError, match="ramp_start_rate needs ramp_s"):
        LoadMatrix(request_rate=[1.0], ramp_start_rate=1.0)
    pts = LoadMatrix(concurrency=[2], request_rate=[5.0], ramp_s=1.0, ramp_start_rate=1.0).points()
    assert pts[0].ramp_start_rate is None and pts[1].ramp_start_rate == 1.0 and pts[0].ramp_s == 1.0
    assert math.isclose(pts[1].request_rate, 5.0) and pts[1].cooldown is True


def test_seeded_open_loop_is_reproducible():
    def sched(seed):
        srv = FakeServer(lambda idx: 0.0)
        res = _run(LoadPoint(request_rate=3000.0, num_requests=30), srv, cooldown=False, seed=seed)
        s = sorted(r.scheduled_ns for r in res.records)
        return [round((x - s[0]) / 1e3) for x in s]  # microseconds from the first arrival

    a, b = sched(5), sched(5)
    assert a == b and a != sched(6)


def test_closed_loop_warmup_is_at_least_one_full_wave():
    # 2 warm-up requests asked for at concurrency 5: the first wave (5 requests) is all warm-up, so no
    # measured request starts alongside a cold first batch; warmup_requests=0 still means none
    srv = FakeServer()
    res = _run(LoadPoint(concurrency=5, num_requests=10, warmup_requests=2), srv)
    assert res.warmup_sent == 5 and sum(r.warmup for r in res.records) == 5
    starts = [e for e in srv.events if e[0] == "start"]
    assert all(e[2] for e in starts[:5]) and not any(e[2] for e in starts[5:15])
    none = _run(LoadPoint(concurrency=5, num_requests=10, warmup_requests=0), FakeServer())
    assert none.warmup_sent == 0
