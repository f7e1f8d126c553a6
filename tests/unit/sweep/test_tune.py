"""tune: ladders, the batch limit, twins, the interpolated probe, and known-answer searches with a fake measure
function whose rows follow a server's physics (a closed loop of c requests runs min(c, max_num_seqs) of them)."""

from __future__ import annotations

import itertools

import pytest

from bench.config.slo import parse_slo
from bench.config.sweep import Point, Sweep
from bench.errors import UserInputError
from bench.sweep.ladders import batch_guess, predicted_knee, saturation_index, twin_rows
from bench.sweep.tune import best_row, bisect_ladder, ladders, tune

CONCURRENCIES = [1, 2, 4, 8, 16, 32, 64, 128]  # indices 0..7
IDX = {c: i for i, c in enumerate(CONCURRENCIES)}


def make_sweep(dtypes=("bfloat16", "float32"), concurrency=CONCURRENCIES, request_rate=(), workloads=None,
               seqs=None, zip_seqs=False):
    """max_num_seqs: the default (32) unless `seqs`; `zip_seqs` pairs dtypes[i] with seqs[i] instead of crossing."""
    server = {"model": "glm-4.5-tiny", "dtype": list(dtypes)}
    if seqs is not None:
        server["max_num_seqs"] = list(seqs)
    return Sweep(
        name="t", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0}, server=server,
        load={"concurrency": list(concurrency), "request_rate": list(request_rate), "num_requests": 4},
        workloads=workloads or [{"name": "w"}], zip=(("dtype", "max_num_seqs"),) if zip_seqs else (),
    )


def streams(load: float, m: int, closed: bool = True) -> float:
    """Throughput in units of one stream: a closed loop of c requests on a server with max_num_seqs m runs
    min(c, m) sequences; a queued request fills a slot the moment one frees, which adds 1/32 of the queued load up
    to c = 2m (at most 3% more) and nothing past it: min(c, m) + (min(c, 2m) - m)+ / 32. For m = 32: c <= 32 ->
    c, c = 64 -> 33, c = 128 -> 33. An open loop at r req/s is served at r (below capacity in these fakes)."""
    if not closed:
        return load
    return min(load, m) + max(0.0, min(load, 2 * m) - m) / 32


class FakeMeasure:
    """Rows from closed formulas per dtype (a, b): ttft_p99 = a x load ms (the queue grows with the load),
    $/M output = b / streams, output tok/s per GPU = 1000 x streams / b. Rows depend on max_num_seqs only past
    c = m, so two configs that differ only in max_num_seqs give the same row up to the smaller m (twins)."""

    def __init__(self, params, fail_dtypes=(), spikes=None):
        self.params, self.fail, self.spikes = params, set(fail_dtypes), spikes or {}
        self.calls: list[str] = []
        self.probes: list[tuple[str, int, float]] = []  # (dtype, max_num_seqs, load) in measurement order

    def __call__(self, idx: int, p: Point) -> dict:
        assert p.point_id not in self.calls, "a point was measured twice"
        self.calls.append(p.point_id)
        c, r, dt, m = p.load.concurrency, p.load.request_rate, p.server.dtype, p.server.max_num_seqs
        x = c if c is not None else r
        self.probes.append((dt, m, x))
        base = {"point_id": p.point_id, "dtype": dt, "max_num_seqs": m, "concurrency": c, "request_rate": r,
                "workload": p.workload.name}
        if dt in self.fail:
            return {**base, "status": "failed", "error": "engine failed to start: x", "usd_per_m_output": None,
                    "ttft_ms_p99": None}
        a, b = self.params[dt]
        s = streams(x, m, c is not None)
        return {**base, "status": "ok", "ttft_ms_p99": self.spikes.get((dt, x), a * x), "tpot_ms_p50": 10.0,
                "usd_per_m_output": b / s, "output_tok_s_per_gpu": 1000.0 * s / b}


def searched(res) -> list[tuple[str, int]]:
    """(dtype, concurrency) of the points the search measured, in order (verification's come after them)."""
    return [(r["dtype"], r["concurrency"]) for r in res.rows[:res.points_measured]]


SLO = parse_slo("ttft_ms_p99<=2000")
# max_num_seqs 32 (the default): batch_slots 32, so a ladder's first probe is c=32 (batch_guess, index 5) and
# its loads end at c=64 (the first load >= 2 x 32: searched = 7, c=128 is never searched).
# bfloat16: ttft 100*c ms -> feasible while c <= 20 -> knee 16, $/M = 10/16 = 0.625
# float32:  ttft  30*c ms -> feasible while c <= 66.7 -> knee 64, $/M = 50/33 = 1.515 (c=64 runs 33 streams)
PARAMS = {"bfloat16": (100.0, 10.0), "float32": (30.0, 50.0)}


def test_known_answer_cheapest_config_and_point_count():
    fake = FakeMeasure(PARAMS)
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert res.best["dtype"] == "bfloat16" and res.best["concurrency"] == 16
    assert res.best["usd_per_m_output"] == pytest.approx(0.625)
    # searched loads: indices 0..6 (c=1..64), lo=-1, hi=7.
    # bfloat16 (first ladder, no incumbent): batch guess c=32 (3200 no) -> a load over the SLO: predicted knee
    #   32 x 2000/3200 = 20 -> the highest load <= 20, c=16 (1600 ok): knee pinned (16 ok, 32 not), 2 points,
    #   incumbent $0.625.
    # float32 (incumbent $0.625): one load above bfloat16's knee (16 is not at bfloat16's batch limit 32): c=32,
    #   960 ok, $50/32 = 1.5625; bound from below: a higher load c costs at least 1.5625 x 32/c, which reaches
    #   0.625 only for c >= 80 > 64, the top searched load: nothing left can win, pruned at 32 after 1 point
    #   (its true knee, c=64 at $1.515, would not have won).
    assert searched(res) == [("bfloat16", 32), ("bfloat16", 16), ("float32", 32)]
    assert res.grid_size == 16 and res.points_measured == 3 and len(fake.calls) == 3
    assert res.points_measured <= 0.3 * res.grid_size  # the goal: at most 30% of the grid
    knees = {lad.points[0][1].server.dtype: (lad.knee, lad.measured, lad.pruned) for lad in res.ladders}
    assert knees == {"bfloat16": (16.0, 2, False), "float32": (32.0, 1, True)}
    assert res.found_grid_best is None  # not verified


def test_verify_measures_the_rest_and_confirms_the_grid_best():
    # the search of the test above (3 points), then the other 16 - 3 = 13: 6 of bfloat16, 7 of float32.
    # The grid's best: bfloat16 c=16 ($0.625; c=32 misses the SLO); float32's best is c=64 ($50/33 = 1.515, c=128
    # misses: 3840 ms), so the search's pick is the grid's best.
    fake = FakeMeasure(PARAMS)
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake, verify=True)
    assert res.points_measured == 3 and res.verify_measured == 13 and len(set(fake.calls)) == 16
    assert res.found_grid_best is True
    assert res.grid_best["concurrency"] == 16 and res.grid_best["dtype"] == "bfloat16"


def test_verify_reports_a_miss_when_feasibility_is_not_monotonic():
    # float32 is cheaper here: b = 15, so its c=64 (1920 ms ok) costs $15/33 = 0.4545, the grid's best, below
    # bfloat16's $0.625 at c=16. But float32's c=32 spikes to 5000 ms (a load that misses the SLO below one that
    # meets it, which the search assumes cannot happen):
    # bfloat16: c=32 (3200 no) -> predicted 20 -> c=16 (1600 ok): knee 16, incumbent $0.625 (2 points).
    # float32: one above bfloat16's knee, c=32: 5000 no at $15/32 = 0.46875, which could still beat $0.625
    #   (the ladder goes on); predicted knee 32 x 2000/5000 = 12.8 -> c=8 (240 ok, $1.875); bound from below:
    #   c=16 costs at least 1.875 x 8/16 = 0.9375 > 0.625: pruned at knee 8 after 2 points, so c=64 is never seen.
    # (Without the spike c=32 meets the SLO at $0.46875 and the gallop's next load, c=64, is the answer.)
    fake = FakeMeasure({"bfloat16": (100.0, 10.0), "float32": (30.0, 15.0)}, spikes={("float32", 32): 5000.0})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake, verify=True)
    assert searched(res) == [("bfloat16", 32), ("bfloat16", 16), ("float32", 32), ("float32", 8)]
    assert (res.best["dtype"], res.best["concurrency"]) == ("bfloat16", 16)
    assert (res.grid_best["dtype"], res.grid_best["concurrency"]) == ("float32", 64)
    assert res.grid_best["usd_per_m_output"] == pytest.approx(15 / 33)
    assert res.found_grid_best is False


def test_failed_server_is_infeasible_and_the_search_goes_on():
    fake = FakeMeasure(PARAMS, fail_dtypes={"bfloat16"})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)
    assert res.best["usd_per_m_output"] == pytest.approx(50 / 33)
    # a server that does not start fails every load: its ladder is left after its first point (c=32)
    bf = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "bfloat16")
    assert bf.knee is None and bf.measured == 1 and bf.server_failed
    # float32: no knee before it, no incumbent, and the only ladder measured failed to start: its batch guess,
    # c=32 (960 ok), gallops up one load (a single load under the SLO gives no trend): c=64 (1920 ok), the top
    # searched load (c=128 lies past 2 x 32): knee 64 after 2 points
    f32 = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "float32")
    assert (f32.knee, f32.measured) == (64.0, 2) and res.points_measured == 3
    assert searched(res) == [("bfloat16", 32), ("float32", 32), ("float32", 64)]


def test_failed_points_of_a_running_server_are_only_infeasible():
    # a point that fails on a server that started (no 'engine failed to start' error) does not end its ladder.
    # The whole bfloat16 ladder fails here, and failed rows carry no latency (no trend to interpolate), so the
    # gallop goes down from the batch guess, index 5: c=32 (no), guess-1 c=16 (no), guess-3 c=4 (no), guess-7 is
    # out of range -> midpoint of (-1, 2): index 0, c=1 (no): 4 points, no knee.
    # float32 then starts at its lowest load (nothing met the SLO and a started server measured points):
    # c=1 (30 ok) -> gallop +1, c=2 (60 ok) -> two loads under the SLO: the line through them reaches 2000 ms at
    # 2 + 1940 x 1/30 = 66.7 -> the highest searched load <= 66.7, c=64 (1920 ok): knee 64 after 3 points.
    class PointFails(FakeMeasure):
        def __call__(self, idx, p):
            row = super().__call__(idx, p)
            return {**row, "error": "timeout"} if row["status"] == "failed" else row

    res = tune(make_sweep(), SLO, "usd_per_m_output", PointFails(PARAMS, fail_dtypes={"bfloat16"}))
    bf = next(lad for lad in res.ladders if lad.points[0][1].server.dtype == "bfloat16")
    assert bf.knee is None and bf.measured == 4 and not bf.server_failed
    assert searched(res) == [("bfloat16", 32), ("bfloat16", 16), ("bfloat16", 4), ("bfloat16", 1),
                             ("float32", 1), ("float32", 2), ("float32", 64)]
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)


def test_nothing_feasible_gives_no_best():
    res = tune(make_sweep(), parse_slo("ttft_ms_p99<=1"), "usd_per_m_output", FakeMeasure(PARAMS), verify=True)
    assert res.best is None and res.grid_best is None and res.found_grid_best is True


def test_maximize_objective_picks_highest_throughput():
    # output_tok_s_per_gpu = 1000 x streams / b: bfloat16 c=16 -> 1600 (c=32 misses the SLO); float32 c=64 ->
    # 1000 x 33/50 = 660. Max is bfloat16. (float32's c=32 gives 640, bounding c=64 by 1280 < 1600: pruned.)
    res = tune(make_sweep(), SLO, "output_tok_s_per_gpu", FakeMeasure(PARAMS))
    assert res.best["output_tok_s_per_gpu"] == pytest.approx(1600.0)


def test_bisection_finds_the_threshold_in_log_steps():
    """Pure bisection survives where nothing gives a trend: with no guess, the probe is the midpoint while the
    ladder has no load over the SLO with a latency and fewer than two under it (`predicted_knee` is None). A
    ladder whose every load times out (failed rows carry no latency) is such a ladder: bisect_ladder halves it
    down to its lowest load, hi -> (hi - 1) // 2, which takes floor(log2(n + 1)) points for n loads.
    Whatever the probes, the bracket moves only by what is measured, so a step threshold's knee is exact."""
    for n in range(1, 41):
        loads = list(range(1, n + 1))  # max_num_seqs 32: the batch limit (c >= 64) is past every load
        (lad,) = ladders(make_sweep(dtypes=("bfloat16",), concurrency=loads))
        assert lad.searched == n and batch_guess(lad) == (31 if n >= 32 else None)

        measured: list[int] = []

        def timeout(idx, p, measured=measured):
            measured.append(p.load.concurrency)
            return {"status": "failed", "error": "timeout"}

        bisect_ladder(lad, timeout, SLO)
        expected, hi = [], n
        while hi > 0:  # the midpoint of (-1, hi) is (hi - 1) // 2: index i is load i + 1
            hi = (hi - 1) // 2
            expected.append(hi + 1)
        assert measured == expected and len(measured) == (n + 1).bit_length() - 1, (n, measured)
        assert lad.knee is None

        for threshold in range(n + 2):  # feasible iff c <= threshold (ttft 1 ms under the SLO's 5, 9 ms over)
            seen: list[int] = []

            def step(idx, p, threshold=threshold, seen=seen):
                assert p.load.concurrency not in seen, "a point was measured twice"
                seen.append(p.load.concurrency)
                return {"status": "ok", "ttft_ms_p99": 1.0 if p.load.concurrency <= threshold else 9.0}

            bisect_ladder(lad, step, parse_slo("ttft_ms_p99<=5"))
            expected_knee = min(threshold, n) if threshold >= 1 else None
            assert lad.knee == (float(expected_knee) if expected_knee else None), (n, threshold)


def test_interpolation_finds_a_linear_knee_in_at_most_four_points():
    """ttft = 2c ms against an SLO of 2t + 1 ms: feasible iff c <= t, and every line through two measured loads,
    or from the origin through one over the SLO, reaches the limit at t + 0.5, so each predicted probe is c = t
    (exact in floating point: half-integers). No guess: the first probe is the midpoint c0; then
    - c0 over: c = t (ok), then t + 1 (the next load up, unless it is c0): at most 3 points (t = 0: c0, then
      the lowest load, c=1: 2 points);
    - c0 under (one load under: no trend yet): the midpoint c1 of what is left; if c1 is under too, or over,
      the line says t + 0.5: c = t (unless it is measured already), then c = t + 1 (unless measured, or past n):
      at most 4 points, whatever n (bisection needs up to log2(n + 1)).
    (A predicted knee below every load left, here t + 0.5 once t is under, probes the next load up, t + 1.)"""
    for n in range(1, 41):
        (lad,) = ladders(make_sweep(dtypes=("bfloat16",), concurrency=range(1, n + 1)))
        for t in range(n + 2):
            measured: list[int] = []

            def linear(idx, p, measured=measured):
                measured.append(p.load.concurrency)
                return {"status": "ok", "ttft_ms_p99": 2.0 * p.load.concurrency}

            bisect_ladder(lad, linear, parse_slo(f"ttft_ms_p99<={2 * t + 1}"))
            assert lad.knee == (float(min(t, n)) if t >= 1 else None), (n, t, measured)
            assert len(measured) <= 4 and len(set(measured)) == len(measured), (n, t, measured)


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
    # bfloat16 ttft_p99 = 100*c: batch guess c=32 (3200 no) -> predicted knee: ttft 32 x 1600/3200 = 16, tpot (10
    # at one load, under 10 inclusive) no trend -> c=16 (1600 = limit, tpot 10 = limit): inclusive, so the knee
    # is 16 ($/M 10/16 = 0.625); a strict '<' would have missed at c=16 too.
    # float32 ttft_p99 = 30*c: one above bfloat16's knee, c=32 (960 ok, $1.5625); only c >= 80 could reach $0.625
    # and the top searched load is 64: pinned at 32 (c=53.3 would be the limit), pruned as c=64 cannot win.
    fake = FakeMeasure(PARAMS)
    res = tune(make_sweep(), parse_slo("ttft_ms_p99<=1600,tpot_ms_p50<=10"), "usd_per_m_output", fake)
    assert (res.best["dtype"], res.best["concurrency"]) == ("bfloat16", 16)
    assert res.best["usd_per_m_output"] == pytest.approx(0.625)
    assert searched(res) == [("bfloat16", 32), ("bfloat16", 16), ("float32", 32)]
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

# ttft_p99 = a * c ms, $/M = b / streams; SLO ttft_p99 <= 2000 -> knee = largest c <= 2000 / a.
# float32 runs max_num_seqs 64 (searched up to c=128, batch guess c=64), the others 32 (up to c=64, guess c=32).
FOUR = {"bfloat16": (100.0, 10.0),  # knee 16 ($0.625)
        "float16": (60.0, 25.0),  # knee 32 ($0.78125)
        "float32": (30.0, 30.0),  # knee 64 ($30/64 = 0.46875: 64 streams): the grid's best
        "auto": (120.0, 12.0)}  # knee 16 ($0.75)


def test_four_configs_known_answer_and_hand_counted_search():
    fake = FakeMeasure(FOUR)
    sweep = make_sweep(dtypes=tuple(FOUR), seqs=(32, 32, 64, 32), zip_seqs=True)
    res = tune(sweep, SLO, "usd_per_m_output", fake, verify=True)
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 64)
    assert res.found_grid_best is True and res.grid_best is not None
    # ladders by batch_slots, largest first: float32 (64), then bfloat16, float16, auto (32, the sweep's order).
    # float32 (first, no incumbent): batch guess c=64 (1920 ok, $0.46875) -> gallop +1: c=128 (3840 no): 2.
    # bfloat16: float32's knee (64) sat at its batch limit -> this ladder's batch guess, c=32 (3200 no, $0.3125:
    #   could beat $0.46875) -> predicted 32 x 2000/3200 = 20: c=16 (1600 ok, $0.625): knee 16 after 2.
    # float16: one above bfloat16's knee (16, not at its limit 32): c=32 (1920 ok, $0.78125); c=64 bounded by
    #   0.78125 x 32/64 = 0.39 < 0.46875: gallop +1, c=64 (3840 no): knee 32 after 2.
    # auto: float16's knee (32) sat at its batch limit -> batch guess c=32 (3840 no, $0.375: could win) ->
    #   predicted 32 x 2000/3840 = 16.7: c=16 (1920 ok, $0.75): knee 16 after 2.
    assert searched(res) == [("float32", 64), ("float32", 128), ("bfloat16", 32), ("bfloat16", 16),
                             ("float16", 32), ("float16", 64), ("auto", 32), ("auto", 16)]
    got = {lad.points[0][1].server.dtype: (lad.measured, lad.knee, lad.pruned) for lad in res.ladders}
    assert got == {"bfloat16": (2, 16.0, False), "float16": (2, 32.0, False), "float32": (2, 64.0, False),
                   "auto": (2, 16.0, False)}
    # 25% of the grid (the goal: at most 30%, 9 points)
    assert res.points_measured == 8 and res.grid_size == 32 and res.verify_measured == 24


def test_gallop_finds_a_neighbouring_knee_in_two():
    """The same ladder twice (two dtypes with identical rows; not twins, the dtype differs): the second starts one
    above the first's knee, c=32 (3200 no, $0.3125: may reach $0.625). The gallop would step down to c=16; it
    yields to the interpolated probe once a load is over the SLO, which says 32 x 2000/3200 = 20, so c=16 (ok)
    too: the neighbouring knee in 2 points. (The first ladder also takes 2: batch guess c=32, then c=16.)"""
    fake = FakeMeasure({"bfloat16": (100.0, 10.0), "float32": (100.0, 10.0)})
    res = tune(make_sweep(), SLO, "usd_per_m_output", fake)
    assert [lad.measured for lad in res.ladders] == [2, 2]
    assert [r["concurrency"] for r in res.rows[2:]] == [32, 16]
    assert [lad.knee for lad in res.ladders] == [16.0, 16.0]


def test_gallop_runs_while_there_is_no_trend_and_yields_to_the_predicted_knee():
    """The gallop (guess +- 1, 3, 7, ...) orders the probes only while the ladder has no trend: no load over the
    SLO with a latency and fewer than two under it. bisect_ladder with an explicit guess, max_num_seqs 32
    (searched loads c=1..64, indices 0..6), ttft = 100c ms (knee 16)."""
    # up: guess index 2, c=4 (400 ok) -> one load under, no trend: guess+1, c=8 (800 ok) -> two under: the line
    # through them reaches 2000 ms at 8 + 1200 x 4/400 = 20, so c=16 (1600 ok), not the gallop's guess+3 (c=32);
    # the line through the two highest under, (8, 800) and (16, 1600), still says 20: no load in (16, 64] is
    # <= 20, so the next load up, c=32 (3200 no): knee 16 after 4.
    (lad,) = ladders(make_sweep(dtypes=("bfloat16",)))
    fake = FakeMeasure({"bfloat16": (100.0, 10.0)})
    bisect_ladder(lad, fake, SLO, guess=2)
    assert [x for _, _, x in fake.probes] == [4, 8, 16, 32] and lad.knee == 16.0

    # down: loads of 16 and more time out (the client gives up: failed rows, no latency, so no trend): guess
    # index 5, c=32 (timeout) -> guess-1, c=16 (timeout) -> guess-3, c=4 (400 ok: the gallop down stops) -> one
    # load under, no trend, no incumbent: the midpoint of (2, 4), index 3, c=8 (800 ok): knee 8 after 4.
    (lad,) = ladders(make_sweep(dtypes=("bfloat16",)))
    seen: list[int] = []

    def times_out(idx, p):
        c = p.load.concurrency
        seen.append(c)
        return {"status": "failed", "error": "timeout"} if c >= 16 else {"status": "ok", "ttft_ms_p99": 100.0 * c}

    bisect_ladder(lad, times_out, SLO, guess=5)
    assert seen == [32, 16, 4, 8] and lad.knee == 8.0


def test_a_cheaper_server_is_searched_while_it_can_tie():
    # float32 runs on a server 4x cheaper per hour: a point tied with the incumbent (overlapping intervals) wins,
    # so its ladder is searched to its knee even where its $/M can only tie.
    # bfloat16: c=32 (no) -> c=16 (ok, $0.625 at 16000 tok/s +- 50%: $/M interval [0.417, 1.25]).
    # float32: c=32 (3200 no, $10.5/32 = 0.328: within reach of 1.25, the tie limit of a cheaper server) ->
    # predicted 20 -> c=16 (ok, $0.656, interval [0.4375, 1.3125]: overlaps bfloat16's): tied, and cheaper.
    def rows(dt, c, m, base):
        usd_h = 1.0 if dt == "bfloat16" else 0.25
        rate = 1000.0 * streams(c, m)
        return {**base, "output_tok_s": rate, "output_tok_s_ci_lo": rate * 0.5, "output_tok_s_ci_hi": rate * 1.5,
                "gpu_count": 1, "usd_per_gpu_hour": usd_h}

    class Priced(FakeMeasure):
        def __call__(self, idx, p):
            return rows(p.server.dtype, p.load.concurrency, p.server.max_num_seqs, super().__call__(idx, p))

    res = tune(make_sweep(), SLO, "usd_per_m_output", Priced({"bfloat16": (100.0, 10.0), "float32": (100.0, 10.5)}))
    assert (res.best["dtype"], res.best["concurrency"]) == ("float32", 16)  # tied at c=16, and cheaper


# --- the engine's physics: batch limit, twins, order, predicted knee --------------------------------------

def test_saturation_caps_a_concurrency_ladder_at_twice_its_batch():
    # max_num_seqs 8: the first load >= 2 x 8 is c=16 (index 4), so searched = 5 and c=32, 64, 128 never are.
    # ttft 100c ms against 20 s: every load meets the SLO, yet the search stops at c=16: batch guess c=8
    # (800 ok) -> one load under, no trend: gallop +1, c=16 (1600 ok), the top searched load: 2 points.
    # streams: c=8 -> 8, c=16 -> 8.25, c=32..128 -> 8.25 ($10/8.25 each): no load past 16 beats it, so the
    # verification finds no better point (c=16 comes first among the equal ones).
    loose = parse_slo("ttft_ms_p99<=20000")
    sweep = make_sweep(dtypes=("bfloat16",), seqs=(8,))
    (lad,) = ladders(sweep)
    assert (lad.searched, saturation_index(lad), batch_guess(lad)) == (5, 4, 3)
    fake = FakeMeasure({"bfloat16": (100.0, 10.0)})
    res = tune(sweep, loose, "usd_per_m_output", fake, verify=True)
    assert searched(res) == [("bfloat16", 8), ("bfloat16", 16)]
    assert all(r["concurrency"] <= 16 for r in res.rows[:res.points_measured])
    assert res.ladders[0].searched == 5 and res.ladders[0].knee == 16.0
    assert res.best["concurrency"] == 16 and res.found_grid_best is True and res.verify_measured == 6

    # every load at or past 2 x m (m=2, loads 4, 8, 16): only the lowest can be the best, one point
    (low,) = ladders(make_sweep(dtypes=("bfloat16",), concurrency=(4, 8, 16), seqs=(2,)))
    assert low.searched == 1
    fake = FakeMeasure({"bfloat16": (100.0, 10.0)})
    res = tune(make_sweep(dtypes=("bfloat16",), concurrency=(4, 8, 16), seqs=(2,)), loose, "usd_per_m_output", fake)
    assert searched(res) == [("bfloat16", 4)]

    # a request-rate ladder (open loop: the batch does not bound its queue) is not capped: all 8 rates are
    # searched; no batch guess: midpoint index 3, rate 4 (400 ok) -> one under, no trend: midpoint of (3, 8),
    # index 5, rate 16 (1600 ok) -> the line through them reaches 20000 ms at 16 + 18400 x 12/1200 = 200: the
    # top, rate 64 (6400 ok): 3 points, far past 2 x 8.
    rates = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    sweep = make_sweep(dtypes=("bfloat16",), concurrency=(), request_rate=rates, seqs=(8,))
    (lad,) = ladders(sweep)
    assert lad.searched == 8 and saturation_index(lad) == 7 and batch_guess(lad) is None
    fake = FakeMeasure({"bfloat16": (100.0, 10.0)})
    res = tune(sweep, loose, "usd_per_m_output", fake)
    assert [x for _, _, x in fake.probes] == [4.0, 16.0, 64.0] and res.best["request_rate"] == 64.0


def test_twins_settle_the_loads_that_fill_neither_batch():
    # bfloat16 / float32 x max_num_seqs 16 / 64. A = (bfloat16, 16), B = (bfloat16, 64): they differ only in
    # max_num_seqs, so at c <= min(16, 64) = 16 they run the same sequences and give the same row.
    sweep = make_sweep(seqs=(16, 64))
    lads = ladders(sweep)
    by_id = {p.point_id: p for lad in lads for _, p in lad.points}

    def ladder(dt, m, lads=lads):
        return next(x for x in lads if (x.points[0][1].server.dtype, x.points[0][1].server.max_num_seqs) == (dt, m))

    a, b, c = ladder("bfloat16", 16), ladder("bfloat16", 64), ladder("float32", 64)
    fake = FakeMeasure(PARAMS)
    rows_a = [fake(*a.points[IDX[load]]) for load in (8, 16, 32)]  # A measured c=8, 16 and 32
    twins = twin_rows(b, rows_a, by_id)
    # c=8 and c=16 stand for B's; c=32 fills A's batch (16) but not B's (64): no twin
    assert {i: r["concurrency"] for i, r in twins.items()} == {IDX[8]: 8, IDX[16]: 16}
    assert twins[IDX[8]] is rows_a[0] and twins[IDX[16]] is rows_a[1]
    assert twin_rows(c, rows_a, by_id) == {}  # float32: another dtype, another measurement
    failed = {"point_id": a.points[IDX[8]][1].point_id, "status": "failed", "error": "engine failed to start: x"}
    assert twin_rows(b, [failed], by_id) == {}  # A's server did not start: that says nothing about B's

    # B (max_num_seqs 64: searched c=1..128, batch guess c=64) with A's rows: lo = index of c=16 (1600 ok);
    # the line through (8, 800) and (16, 1600) reaches 2000 ms at 20: no load in (16, 128] is <= 20, so the next
    # load up, c=32 (3200 no): knee 16 after 1 point, nothing measured at c <= 16.
    bisect_ladder(b, fake, SLO, guess=batch_guess(b), known=twins)
    assert fake.probes[3:] == [("bfloat16", 64, 32)] and (b.knee, b.measured) == (16.0, 1)
    # without the twins, B takes 3: batch guess c=64 (6400 no) -> predicted 20: c=16 (ok) -> c=32 (no)
    fresh = ladder("bfloat16", 64, ladders(sweep))
    alone = FakeMeasure(PARAMS)
    bisect_ladder(fresh, alone, SLO, guess=batch_guess(fresh))
    assert [x for _, _, x in alone.probes] == [64, 16, 32] and fresh.knee == 16.0

    # in tune the larger batch goes first, so B's rows serve A: B measures c=64 (no), 16 (ok), 32 (no) as above;
    # A (searched c=1..32) gets B's c=16 as a twin (lo), one load above B's knee is c=32 (3200 no): 1 point.
    only_bf = make_sweep(dtypes=("bfloat16",), seqs=(16, 64))
    fake = FakeMeasure(PARAMS)
    res = tune(only_bf, SLO, "usd_per_m_output", fake)
    assert [(m, x) for _, m, x in fake.probes] == [(64, 64), (64, 16), (64, 32), (16, 32)]
    assert [(lad.points[0][1].server.max_num_seqs, lad.measured, lad.knee) for lad in res.ladders] == [
        (64, 3, 16.0), (16, 1, 16.0)]


def test_ladders_are_searched_by_batch_slots_with_each_servers_ladders_together():
    # max_num_seqs 8, 64, 16 (sweep order) x workloads a, b x concurrency and request-rate ladders: 12 ladders.
    # Order: batch_slots descending (64, 16, 8), and a server's 4 ladders in the sweep's order (a before b,
    # concurrency before rate), since the sort is stable and a server's points are adjacent in the sweep.
    wls = [{"name": "a", "output_len": 8}, {"name": "b", "output_len": 16}]
    sweep = make_sweep(dtypes=("bfloat16",), request_rate=(1.0, 4.0), workloads=wls, seqs=(8, 64, 16))
    per_server = [("a", "concurrency"), ("a", "request_rate"), ("b", "concurrency"), ("b", "request_rate")]
    expected = [(m, w, k) for m in (64, 16, 8) for w, k in per_server]
    order = [(lad.points[0][1].server.max_num_seqs, lad.workload, lad.load_kind) for lad in ladders(sweep)]
    assert order == expected
    # tune measures the ladders in that order: every request-rate ladder measures at least its first probe (no
    # twins, nothing to prune before a point), so the servers' measurements come in blocks 64, 16, 8
    fake = FakeMeasure({"bfloat16": (100.0, 10.0)})
    res = tune(sweep, SLO, "usd_per_m_output", fake)
    assert [(lad.points[0][1].server.max_num_seqs, lad.workload, lad.load_kind) for lad in res.ladders] == expected
    assert [m for m, _ in itertools.groupby(m for _, m, _ in fake.probes)] == [64, 16, 8]


def test_predicted_knee_from_the_measured_trend():
    (lad,) = ladders(make_sweep(dtypes=("bfloat16",)))

    def seen(*points):  # (concurrency, ttft_p99[, tpot_p50]) -> (index, row)
        return [(IDX[c], {"status": "ok", "ttft_ms_p99": y, "tpot_ms_p50": rest[0] if rest else 10.0})
                for c, y, *rest in points]

    # a bracket: the line from (8, 800) to (32, 2400) reaches 2000 at 8 + 1200 x 24/1600 = 26
    assert predicted_knee(lad, seen((32, 2400.0), (8, 800.0)), SLO) == pytest.approx(26.0)
    # the highest under and the lowest over: (8, 800) and (16, 2500): 8 + 1200 x 8/1700 = 13.647
    assert predicted_knee(lad, seen((4, 100.0), (8, 800.0), (16, 2500.0), (32, 9000.0)), SLO) == pytest.approx(
        8 + 1200 * 8 / 1700)
    # all over: in proportion to the lowest, x1 x limit / y1: 32 x 2000/3200 = 20; (16, 2500) of two: 12.8
    assert predicted_knee(lad, seen((32, 3200.0)), SLO) == pytest.approx(20.0)
    assert predicted_knee(lad, seen((16, 2500.0), (32, 5000.0)), SLO) == pytest.approx(12.8)
    # ... unless the two lowest over show the metric did not fall with the load (a floor over the limit, flat or
    # falling): no proportion to trust, the search bisects
    assert predicted_knee(lad, seen((16, 5000.0), (32, 5000.0)), SLO) is None
    assert predicted_knee(lad, seen((16, 6000.0), (32, 5000.0)), SLO) is None
    # two under: the line through the two highest, (4, 400) and (8, 1000): 8 + 1000 x 4/600 = 14.667
    assert predicted_knee(lad, seen((4, 400.0), (8, 1000.0)), SLO) == pytest.approx(44 / 3)
    assert predicted_knee(lad, seen((1, 50.0), (4, 400.0), (8, 1000.0)), SLO) == pytest.approx(44 / 3)
    # flat (or falling) under: the trend never reaches the limit
    assert predicted_knee(lad, seen((4, 500.0), (8, 500.0)), SLO) == float("inf")
    assert predicted_knee(lad, seen((4, 600.0), (8, 500.0)), SLO) == float("inf")
    # one under (or nothing): no trend yet
    assert predicted_knee(lad, seen((8, 800.0)), SLO) is None
    assert predicted_knee(lad, [], SLO) is None
    # two terms: the lower knee. ttft bracket (8, 800)-(32, 2400): 26; tpot bracket (8, 30)-(32, 70) against 50:
    # 8 + 20 x 24/40 = 20 -> 20
    two = parse_slo("ttft_ms_p99<=2000,tpot_ms_p50<=50")
    assert predicted_knee(lad, seen((8, 800.0, 30.0), (32, 2400.0, 70.0)), two) == pytest.approx(20.0)
    # a term with no trend yet (tpot 20 at one load) leaves the other's: ttft 32 x 2000/3200 = 20
    assert predicted_knee(lad, seen((32, 3200.0, 20.0)), two) == pytest.approx(20.0)
    # a flat term (inf) loses to any finite one: ttft bracket 26, tpot 30 and 30 -> 26
    assert predicted_knee(lad, seen((8, 800.0, 30.0), (32, 2400.0, 30.0)), two) == pytest.approx(26.0)
