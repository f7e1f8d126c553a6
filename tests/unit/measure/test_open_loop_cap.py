"""Issue 25, item 5: the open-loop sender caps its backlog. An endpoint slower than the requested rate used to
make the client queue without bound (request_rate 100000 grew the harness to 22 GB, ignoring Ctrl-C); now the
point stops with "the endpoint cannot sustain N req/s (backlog X after Y s)". A fake `send` that never answers
stands in for an endpoint that cannot keep up (the simulator version is tests/integration/sweep/
test_signals_and_caps.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.config.sweep import LoadPoint
from bench.measure.client import RequestRecord, RequestSpec
from bench.measure.loadgen import OPEN_LOOP_BACKLOG_CAP, CannotSustainRate, run_load

REQ = RequestSpec(prompt="a b", input_len=2, output_len=3)


class NeverAnswers:
    """An endpoint that accepts every request and never answers: counts what was sent and what was cancelled."""

    def __init__(self) -> None:
        self.sent = 0
        self.cancelled = 0

    async def send(self, idx: int, req: RequestSpec, warmup: bool, scheduled_ns: int | None) -> RequestRecord:
        self.sent += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return RequestRecord(request_idx=idx, send_ns=time.perf_counter_ns(), input_tokens=2, max_tokens=3)


def _endless():
    while True:
        yield REQ


def test_a_rate_the_endpoint_cannot_sustain_stops_the_point_with_the_reason():
    srv = NeverAnswers()
    lp = LoadPoint(request_rate=100000.0, num_requests=10**9, warmup_requests=0)
    with pytest.raises(CannotSustainRate, match=r"the endpoint cannot sustain 100000 req/s \(backlog \d+ after "
                                                r"[\d.]+ s"):
        asyncio.run(run_load(srv.send, [], _endless(), lp, cooldown=_endless()))
    # bounded: never more requests held than the cap (+ the one that found it full), and none left running
    assert 0 < srv.sent <= OPEN_LOOP_BACKLOG_CAP + 1
    assert srv.cancelled == srv.sent


def test_requests_waiting_for_a_max_concurrency_slot_count_toward_the_backlog():
    srv = NeverAnswers()
    lp = LoadPoint(request_rate=100000.0, num_requests=10**9, warmup_requests=0, max_concurrency=2)
    with pytest.raises(CannotSustainRate, match="cannot sustain 100000 req/s"):
        asyncio.run(run_load(srv.send, [], _endless(), lp))
    assert srv.sent == 2  # two in flight; every other request waited in the client until the cap stopped it


def test_the_backlog_cap_is_raised_by_a_larger_max_concurrency():
    # max_concurrency 3000 may hold 3000 requests in flight legitimately: the cap is 2 x 3000
    srv = NeverAnswers()
    lp = LoadPoint(request_rate=100000.0, num_requests=10**9, warmup_requests=0, max_concurrency=3000)
    with pytest.raises(CannotSustainRate) as err:
        asyncio.run(run_load(srv.send, [], _endless(), lp))
    backlog = int(str(err.value).split("backlog ")[1].split()[0])
    assert backlog > 2 * 3000 > OPEN_LOOP_BACKLOG_CAP  # it ran past the default cap
    assert "cap 6000 requests" in str(err.value)
    assert srv.sent <= 3000


def test_a_sustainable_rate_is_not_stopped():
    async def instant(idx: int, req: RequestSpec, warmup: bool, scheduled_ns: int | None) -> RequestRecord:
        now = time.perf_counter_ns()
        return RequestRecord(request_idx=idx, send_ns=now, input_tokens=2, max_tokens=3, ok=True, done_ns=now,
                             chunk_ns=[now])

    res = asyncio.run(run_load(instant, [], _endless(), LoadPoint(request_rate=500.0, num_requests=50,
                                                                  warmup_requests=0)))
    assert res.measured_sent == 50 and len([r for r in res.records if r.measured]) == 50
