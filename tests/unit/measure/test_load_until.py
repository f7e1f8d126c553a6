"""load.until: measure a point in rounds of num_requests until the output tok/s 95% interval is tight enough or
max_requests is reached, in one continuous stream. A fake `send` (asyncio.sleep, no network) stands in for the
server; the interval check is scripted where the number of rounds must not depend on the machine's timing."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

import bench.measure.loadgen as loadgen
from bench.config.base import stable_hash
from bench.config.sweep import LoadMatrix, LoadPoint
from bench.measure.intervals import T_975_DF9
from bench.measure.metrics import RequestRecord, summarize
from tests.unit.measure.test_loadgen import FakeServer, _run

S = 1_000_000_000


def _until(target: float, cap: int, n: int = 10, conc: int = 2) -> LoadPoint:
    return LoadPoint(concurrency=conc, num_requests=n, warmup_requests=0,
                     until={"throughput_rel_ci": target, "max_requests": cap})


def test_rounds_continue_while_the_interval_is_wide_then_stop_when_it_is_tight(monkeypatch):
    widths = iter([0.30, 0.12, 0.04])  # scripted: 3 rounds are needed for a 5% target
    monkeypatch.setattr(loadgen, "throughput_rel_width", lambda records: next(widths))
    srv = FakeServer()
    res = _run(_until(0.05, 100), srv)
    measured = [r for r in res.records if r.measured]
    assert res.until_rounds == 3 and len(measured) == 30
    assert sorted(r.request_idx for r in measured) == list(range(30))  # one numbering across rounds
    assert res.columns()["until_rounds"] == 3 and res.stop_reason == "count"


def test_the_cap_ends_the_rounds_and_the_last_round_is_cut_to_it(monkeypatch):
    monkeypatch.setattr(loadgen, "throughput_rel_width", lambda records: 1.0)  # never tight
    res = _run(_until(0.05, 25), FakeServer())
    assert res.until_rounds == 3 and sum(r.measured for r in res.records) == 25  # 10 + 10 + 5


def test_too_few_requests_for_an_interval_count_as_not_tight(monkeypatch):
    # below MIN_REQUESTS (10) there is no interval: the first round of 4 is followed by more
    res = _run(_until(2.0, 12, n=4), FakeServer())
    assert res.until_rounds == 3 and sum(r.measured for r in res.records) == 12


def test_the_stream_does_not_pause_between_rounds(monkeypatch):
    monkeypatch.setattr(loadgen, "throughput_rel_width", lambda records: 1.0)
    srv = FakeServer(service_s=lambda idx: 0.005)
    res = _run(_until(0.05, 30, conc=3), srv)
    assert res.until_rounds == 3
    # from the third start (all 3 workers busy) to the last measured end, every send refills a slot: the server
    # runs 3 requests at each start (cool-down requests fill the tail of a round until the next one starts)
    last_end = max(i for i, e in enumerate(srv.events) if e[0] == "end" and e[1] >= 0)
    starts = [e for e in srv.events[:last_end] if e[0] == "start"]
    assert len(starts) > 30 and all(e[3] == 3 for e in starts[3:])


def test_without_until_one_round_and_no_rounds_column():
    res = _run(LoadPoint(concurrency=2, num_requests=10, warmup_requests=0), FakeServer())
    assert res.until_rounds is None and sum(r.measured for r in res.records) == 10


def _alternating_records() -> list[RequestRecord]:
    """10 measured requests, request i sent at i s with one chunk at i + 0.5 s carrying 10 (even i) or 30 (odd i)
    tokens: window [0, 9.5 s], 10 batches of 0.95 s with one chunk each. Batch rates alternate 10/0.95 and
    30/0.95: mean 20/0.95, sd (ddof 1) (10/0.95) sqrt(10/9), half-width t sd / sqrt(10) = t (10/0.95) / 3, so
    the relative width of the 95% interval is 2 t (10/0.95) / 3 / (20/0.95) = t / 3 (t = t(0.975, 9))."""
    recs = []
    for i in range(10):
        r = RequestRecord(request_idx=i, send_ns=i * S, input_tokens=4, max_tokens=30,
                          chunk_ns=[i * S + S // 2], ok=True, usage_completion_tokens=10 if i % 2 == 0 else 30)
        r.done_ns = r.chunk_ns[-1]
        recs.append(r)
    return recs


def test_relative_width_by_hand():
    recs = _alternating_records()
    assert loadgen.throughput_rel_width(recs) == pytest.approx(T_975_DF9 / 3, rel=1e-9)
    row = summarize(recs)  # the check between rounds is the row's own interval, centred on the row's figure
    assert row["output_tok_s"] == pytest.approx(200 / 9.5, rel=1e-12)
    assert row["output_tok_s_ci_lo"] == pytest.approx(200 / 9.5 - T_975_DF9 * 10 / 0.95 / 3, rel=1e-9)
    assert row["output_tok_s_ci_hi"] == pytest.approx(200 / 9.5 + T_975_DF9 * 10 / 0.95 / 3, rel=1e-9)
    rel_row = (row["output_tok_s_ci_hi"] - row["output_tok_s_ci_lo"]) / row["output_tok_s"]
    assert loadgen.throughput_rel_width(recs) == pytest.approx(rel_row, rel=1e-9)
    assert loadgen.throughput_rel_width(recs[:9]) is None  # below MIN_REQUESTS
    for r in recs:
        r.ok = False
    assert loadgen.throughput_rel_width(recs) is None  # nothing completed yet: no figure to judge


def test_stop_rule_against_the_hand_computed_width():
    """load.until's rule: another round while the relative width (t / 3 = 0.754 here) is above the target."""
    recs = _alternating_records()
    width = T_975_DF9 / 3

    def rule(target: float) -> bool:
        return loadgen._wider_than_target(recs, _until(target, 100))

    assert rule(width * 0.99) and not rule(width * 1.01)
    assert loadgen._wider_than_target(recs[:9], _until(2.0, 100))  # no interval yet: never tight


def test_until_leaves_point_ids_alone_when_absent_and_is_checked():
    lp = LoadPoint(concurrency=2, num_requests=10)
    assert "until" not in lp.model_dump()  # absent: the dump (hence the point id) is what it was before
    with_until = LoadPoint(concurrency=2, num_requests=10, until={"throughput_rel_ci": 0.05, "max_requests": 40})
    assert stable_hash(with_until.model_dump()) != stable_hash(lp.model_dump())
    m = LoadMatrix(concurrency=[1, 2], until={"throughput_rel_ci": 0.1, "max_requests": 64})
    assert all(p.until is not None and p.until.max_requests == 64 for p in m.points())
    with pytest.raises(ValidationError, match="below num_requests"):
        LoadPoint(concurrency=1, num_requests=10, until={"throughput_rel_ci": 0.05, "max_requests": 5})
    with pytest.raises(ValidationError, match="without duration_s"):
        LoadMatrix(concurrency=[1], duration_s=5, until={"throughput_rel_ci": 0.05, "max_requests": 50})
    with pytest.raises(ValidationError):
        LoadPoint(concurrency=1, until={"throughput_rel_ci": 0, "max_requests": 50})


def test_open_loop_rounds(monkeypatch):
    widths = iter([0.5, 0.01])
    monkeypatch.setattr(loadgen, "throughput_rel_width", lambda records: next(widths))
    lp = LoadPoint(request_rate=400.0, num_requests=10, warmup_requests=0,
                   until={"throughput_rel_ci": 0.05, "max_requests": 100})
    res = asyncio.run(loadgen.run_load(FakeServer().send, iter([]), _reqs(), lp, cooldown=_reqs()))
    assert res.until_rounds == 2 and sum(r.measured for r in res.records) == 20


def _reqs():
    from tests.unit.measure.test_loadgen import REQ

    while True:
        yield REQ
