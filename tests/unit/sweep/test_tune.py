"""tune: ladders, bisection toward the knee, and known-answer searches with a fake measure function."""

from __future__ import annotations

import math
import random

import pytest

from bench.config.slo import parse_slo
from bench.config.sweep import Point, Sweep
from bench.errors import UserInputError
from bench.sweep.tune import best_row, bisect_ladder, ladders, tune

CONCURRENCIES = [1, 2, 4, 8, 16, 32, 64, 128]


def make_sweep(dtypes=("bfloat16", "float32"), concurrency=CONCURRENCIES, request_rate=(), workloads=None):
    return Sweep(
        name="t", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
        server={"model": "glm-4.5-tiny", "dtype": list(dtypes)},
        load={"concurrency": list(concurrency), "request_rate": list(request_rate), "num_requests": 4},
        workloads=workloads or [{"name": "w"}],
    )


class FakeMeasure:
    """Rows from closed formulas per dtype: ttft_p99 = a * c ms, $/M output = b / c."""

    def __init__(self, params, fail_dtypes=(), spikes=None):
        self.params, self.fail, self.spikes = params, set(fail_dtypes), spikes or {}
        self.calls: list[str] = []

    def __call__(self, idx: int, p: Point) -> dict:
        assert p.point_id not in self.calls, "a point was measured twice"
        self.calls.append(p.point_id)
        c, dt = p.load.concurrency, p.server.dtype
        if dt in self.fail:
            return {"point_id": p.point_id, "status": "failed", "error": "engine failed to start: x",
                    "dtype": dt, "concurrency": c, "usd_per_m_output": None, "ttft_ms_p99": None}
        a, b = self.params[dt]
        ttft = self.spikes.get((dt, c), a * c)
        return {"point_id": p.point_id, "status": "ok", "dtype": dt, "concurrency": c, "ttft_ms_p99": ttft,
                "tpot_ms_p50": 10.0, "usd_per_m_output": b / c, "output_tok_s_per_gpu": 1000.0 * c / b}


SLO = parse_slo("ttft_ms_p99<=2000")
# bfloat16: ttft 100*c ms -> feasible while c <= 20 -> knee 16, $/M = 10/16 = 0.625
# float32:  ttft  30*c ms -> feasible while c <= 66.7 -> knee 64, $/M = 50/64 = 0.78125
PARAMS = {"bfloat16": (100.0, 10.0), "float32": (30.0, 50.0)}


def test_known_answer_cheapest_config_and_point_count():
    fake = FakeMeasure(PARAMS)
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert res.best["dtype"] == "bfloat16" and res.best["concurrency"] == 16
    assert res.best["usd_per_m_output"] == pytest.approx(0.625)
    # 8 loads (indices 0..7), bounds lo=-1, hi=8:
    # bfloat16 (first ladder, plain bisection): mid 3 (c=8, 800 ok) -> mid 5 (c=32, 3200 no) -> mid 4 (c=16,
    # 1600 ok): 3 points, incumbent $0.625.
    # float32, warm start one load above bfloat16's knee: c=32, 960 ok, $50/32 = 1.5625; bound from below: a
    # higher load c costs at least 1.5625 x 32 / c, which reaches 0.625 only for c >= 80, so c=64 is skipped and
    # the top, c=128, is probed: 3840 no ($0.39: could win, but no load left below it can). Nothing left can
    # win: 2 points, pruned at 32 (its true knee, c=64 at $0.78125, would not have won).
    assert res.grid_size == 16 and res.points_measured == 5 and len(fake.calls) == 5
    knees = {lad.points[0][1].server.dtype: (lad.knee, lad.measured, lad.pruned) for lad in res.ladders}
    assert knees == {"bfloat16": (16.0, 3, False), "float32": (32.0, 2, True)}
    assert res.found_grid_best is None  # not verified


def test_verify_measures_the_rest_and_confirms_the_grid_best():
    fake = FakeMeasure(PARAMS)
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake, verify=True)
    assert res.points_measured == 5 and res.verify_measured == 11 and len(set(fake.calls)) == 16
    assert res.found_grid_best is True
    assert res.grid_best["concurrency"] == 16 and res.grid_best["dtype"] == "bfloat16"


def test_verify_reports_a_miss_when_feasibility_is_not_monotonic():
    # bfloat16 at c=8 spikes to 5000 ms: bisection sees 'infeasible' at index 3 and searches below it:
    # mid 3 (c=8, no) -> mid 1 (c=2, 200 ok) -> mid 2 (c=4, 400 ok): knee 4, $/M 10/4 = 2.5.
    # float32 knee stays 64 ($/M 0.78125), so the search answers float32 c=64,
    # while the full grid holds bfloat16 c=16 (1600 ms, $/M 0.625).
    fake = FakeMeasure(PARAMS, spikes={("bfloat16", 8): 5000.0})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake, verify=True)
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)
    assert (res.grid_best["dtype"], res.grid_best["concurrency"]) == ("bfloat16", 16)
    assert res.found_grid_best is False


def test_failed_server_is_infeasible_and_the_search_goes_on():
    fake = FakeMeasure(PARAMS, fail_dtypes={"bfloat16"})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)
    # a server that does not start fails every load: its ladder is left after its first point
    bf = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "bfloat16")
    assert bf.knee is None and bf.measured == 1 and bf.server_failed
    # float32 is then bisected like a first ladder: c=8 (240 ok), c=32 (960 ok), c=64 (1920 ok), c=128 (3840 no)
    f32 = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "float32")
    assert (f32.knee, f32.measured) == (64.0, 4) and res.points_measured == 5


def test_failed_points_of_a_running_server_are_only_infeasible():
    # a point that fails on a server that started (no 'engine failed to start' error) does not end its ladder:
    # the whole bfloat16 ladder fails here, so bisection visits c=8, c=2, c=1 (3 points) to learn that
    class PointFails(FakeMeasure):
        def __call__(self, idx, p):
            row = super().__call__(idx, p)
            return {**row, "error": "timeout"} if row["status"] == "failed" else row

    res = tune(make_sweep(), SLO, "usd_per_m_output", PointFails(PARAMS, fail_dtypes={"bfloat16"}))
    bf = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "bfloat16")
    assert bf.knee is None and bf.measured == 3 and not bf.server_failed


def test_nothing_feasible_gives_no_best():
    res = tune(make_sweep(), parse_slo("ttft_ms_p99<=1"), "usd_per_m_output", FakeMeasure(PARAMS), verify=True)
    assert res.best is None and res.grid_best is None and res.found_grid_best is True


def test_maximize_objective_picks_highest_throughput():
    # output_tok_s_per_gpu = 1000*c/b: bfloat16 c=16 -> 1600; float32 c=64 -> 1280. Max is bfloat16.
    res = tune(make_sweep(), SLO, "output_tok_s_per_gpu", FakeMeasure(PARAMS))
    assert res.best["output_tok_s_per_gpu"] == pytest.approx(1600.0)


def test_bisection_finds_the_threshold_in_log_steps():
    rng = random.Random(1)
    for n in range(1, 41):
        loads = list(range(1, n + 1))
        sweep = make_sweep(dtypes=("bfloat16",), concurrency=loads)
        (lad,) = ladders(sweep)
        threshold = rng.randint(0, n + 1)  # feasible iff c <= threshold
        measured = []

        def measure(idx, p, threshold=threshold, measured=measured):
            measured.append(p.load.concurrency)
            return {"point_id": p.point_id, "status": "ok", "ttft_ms_p99": 1.0 if p.load.concurrency <= threshold
                    else 9.0}

        bisect_ladder(lad, measure, parse_slo("ttft_ms_p99<=5"))
        expected_knee = min(threshold, n) if threshold >= 1 else None
        assert lad.knee == (float(expected_knee) if expected_knee else None), (n, threshold)
        assert len(measured) <= math.ceil(math.log2(n + 1)), (n, threshold, measured)


def test_ladders_split_by_workload_and_load_kind_and_sort_loads():
    sweep = make_sweep(dtypes=("bfloat16",), concurrency=[8, 1, 4], request_rate=[2.0, 0.5],
                       workloads=[{"name": "a", "output_len": 8}, {"name": "b", "output_len": 16}])
    lads = ladders(sweep)
    assert [(lad.workload, lad.load_kind) for lad in lads] == [
        ("a", "concurrency"), ("a", "request_rate"), ("b", "concurrency"), ("b", "request_rate")]
    conc = [p.load.concurrency for _, p in lads[0].points]
    rates = [p.load.request_rate for _, p in lads[1].points]
    assert conc == [1, 4, 8] and rates == [0.5, 2.0]
    # indices refer to the sweep's own point order, so rows match a `run` of the same sweep
    points = sweep.points()
    assert all(points[i].point_id == p.point_id for lad in lads for i, p in lad.points)


def test_tune_reads_every_slo_term_at_its_percentile_inclusive():
    # the SLO syntax itself is tested in tests/unit/config/test_slo.py; here: tune applies it to rows.
    # bfloat16 ttft_p99 = 100*c: mid 3 (c=8, 800 ok) -> mid 5 (c=32, 3200 no) -> mid 4 (c=16, 1600 = limit):
    # inclusive, so the knee is 16 ($/M 10/16 = 0.625); a strict '<' would stop at c=8 ($/M 1.25).
    # float32 ttft_p99 = 30*c (warm start one above bfloat16's knee, c=32: 960 ok, $1.5625; only c >= 80 could
    # reach $0.625: c=128, 3840 no): pinned at 32 (c=53.3 would be the limit), pruned as c=64 cannot win.
    res = tune(make_sweep(), parse_slo("ttft_ms_p99<=1600,tpot_ms_p50<=10"), "usd_per_m_output", FakeMeasure(PARAMS))
    assert (res.best["dtype"], res.best["concurrency"]) == ("bfloat16", 16)
    assert res.best["usd_per_m_output"] == pytest.approx(0.625)
    assert {lad.points[0][1].server.dtype: lad.knee for lad in res.ladders} == {"bfloat16": 16.0, "float32": 32.0}
    # every row has tpot_ms_p50 = 10: a second term just under it makes every point infeasible
    strict = tune(make_sweep(), parse_slo("ttft_ms_p99<=1600,tpot_ms_p50<=9.99"), "usd_per_m_output",
                  FakeMeasure(PARAMS))
    assert strict.best is None


def test_unknown_objective_names_allowed_values():
    with pytest.raises(UserInputError, match="usd_per_m_output"):
        tune(make_sweep(), SLO, "cheapness", FakeMeasure(PARAMS))


def test_best_row_ignores_failed_and_partial_rows():
    rows = [{"status": "partial", "ttft_ms_p99": 1.0, "usd_per_m_output": 0.1},
            {"status": "ok", "ttft_ms_p99": 1.0, "usd_per_m_output": 0.5},
            {"status": "ok", "ttft_ms_p99": 1.0, "usd_per_m_output": None}]
    assert best_row(rows, SLO, "usd_per_m_output")["usd_per_m_output"] == 0.5


# --- ties within measurement noise (95% throughput intervals, bench/measure/intervals.py) -----------

def ci_row(usd, rate, half, gpus=1, usd_h=1.0, ttft=1.0):
    """A feasible row whose output_tok_s interval is rate +- half; $/M output = usd."""
    return {"status": "ok", "ttft_ms_p99": ttft, "usd_per_m_output": usd, "output_tok_s": rate,
            "output_tok_s_ci_lo": rate - half, "output_tok_s_ci_hi": rate + half, "gpu_count": gpus,
            "usd_per_gpu_hour": usd_h}


def test_overlapping_intervals_are_tied_and_the_cheaper_server_wins():
    # A: $0.50/M at 1000 +- 50 tok/s -> $/M interval [0.5 * 1000/1050, 0.5 * 1000/950] = [0.4762, 0.5263]
    # B: $0.52/M at 1000 +- 50 tok/s -> [0.4952, 0.5474]: overlaps A's, and B's server costs $1/h vs A's $8/h
    a = ci_row(0.50, 1000.0, 50.0, gpus=8)
    b = ci_row(0.52, 1000.0, 50.0, gpus=1)
    assert best_row([a, b], SLO, "usd_per_m_output") is b


def test_separated_intervals_keep_the_better_value():
    # B: $0.60/M at 1000 +- 10 -> [0.5941, 0.6061], above A's [0.4950, 0.5051]: not tied, A wins though pricier
    a = ci_row(0.50, 1000.0, 10.0, gpus=8)
    b = ci_row(0.60, 1000.0, 10.0, gpus=1)
    assert best_row([a, b], SLO, "usd_per_m_output") is a


def test_tie_on_a_throughput_objective_and_same_hourly_cost_keeps_the_better_value():
    # output_tok_s objective: intervals [950, 1050] and [1000, 1100] overlap; same $/h -> the higher value
    a = ci_row(0.5, 1000.0, 50.0)
    b = ci_row(0.5, 1050.0, 50.0)
    assert best_row([a, b], SLO, "output_tok_s") is b


def test_rows_without_intervals_keep_the_old_rule():
    a = {"status": "ok", "ttft_ms_p99": 1.0, "usd_per_m_output": 0.5, "gpu_count": 8, "usd_per_gpu_hour": 1.0}
    b = {"status": "ok", "ttft_ms_p99": 1.0, "usd_per_m_output": 0.51, "gpu_count": 1, "usd_per_gpu_hour": 1.0}
    assert best_row([a, b], SLO, "usd_per_m_output") is a


# --- the search across ladders: warm start, gallop, bounds ------------------------------------------------

# ttft_p99 = a * c ms, $/M = b / c; SLO ttft_p99 <= 2000 -> knee = largest c <= 2000 / a
FOUR = {"bfloat16": (100.0, 10.0),  # knee 16 ($0.625)
        "float16": (60.0, 25.0),  # knee 32 ($0.78125)
        "float32": (30.0, 30.0),  # knee 64 ($0.46875): the grid's best
        "auto": (120.0, 12.0)}  # knee 16 ($0.75)


def test_four_configs_known_answer_and_hand_counted_search():
    fake = FakeMeasure(FOUR)
    res = tune(make_sweep(dtypes=tuple(FOUR)), SLO, "usd_per_m_output", fake, verify=True)
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)
    assert res.found_grid_best is True and res.grid_best is not None
    # bfloat16: bisection c=8 ok, c=32 no, c=16 ok (3) -> incumbent $0.625.
    # float16: warm start one above bfloat16's knee, c=32 (1920 ok, $0.78125); only c >= 40 could reach $0.625 ->
    #   c=64 (3840 no, $0.39): knee pinned at 32 after 2.
    # float32: one above the last knee (32): c=64 (1920 ok, $0.469) -> c=128 (3840 no): 2.
    # auto (incumbent float32 c=64 $0.469): c=128 (15360 no, $0.094: may reach), gallop down c=64 (no, $0.1875),
    #   c=16 (1920 ok, $0.75; c=32 bounded by 0.75 x 16/32 = 0.375: may reach) -> c=32 (3840 no): knee 16 after 4.
    got = {lad.points[0][1].server.dtype: (lad.measured, lad.knee, lad.pruned) for lad in res.ladders}
    assert got == {"bfloat16": (3, 16.0, False), "float16": (2, 32.0, False), "float32": (2, 64.0, False),
                   "auto": (4, 16.0, False)}
    assert res.points_measured == 11 and res.grid_size == 32  # 34% of the grid; plain bisection: 3+4+4+3 = 14


def test_gallop_finds_a_neighbouring_knee_in_two():
    # the same ladder twice (two dtypes with identical rows): the second starts one above the first's knee, c=32
    # (no, $0.3125: may reach $0.625), then gallops down to c=16 (ok): 2 points instead of bisection's 3
    fake = FakeMeasure({"bfloat16": (100.0, 10.0), "float32": (100.0, 10.0)})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert [lad.measured for lad in res.ladders] == [3, 2]
    assert [r["concurrency"] for r in res.rows[3:]] == [32, 16]
    assert [lad.knee for lad in res.ladders] == [16.0, 16.0]


def test_a_cheaper_server_is_searched_while_it_can_tie():
    # float32 runs on a server 4x cheaper per hour: a point tied with the incumbent (overlapping intervals) wins,
    # so its ladder is searched to its knee even where its $/M can only tie
    def rows(dt, c, base):
        usd_h = 1.0 if dt == "bfloat16" else 0.25
        rate = 1000.0 * c
        return {**base, "output_tok_s": rate, "output_tok_s_ci_lo": rate * 0.5, "output_tok_s_ci_hi": rate * 1.5,
                "gpu_count": 1, "usd_per_gpu_hour": usd_h}

    class Priced(FakeMeasure):
        def __call__(self, idx, p):
            return rows(p.server.dtype, p.load.concurrency, super().__call__(idx, p))

    res = tune(make_sweep(), SLO, "usd_per_m_output", Priced({"bfloat16": (100.0, 10.0), "float32": (100.0, 10.5)}))
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 16)  # tied at c=16, and cheaper
