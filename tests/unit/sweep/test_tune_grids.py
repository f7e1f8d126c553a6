"""tune on 4 x 8 synthetic grids whose best point is known by construction: it must find that point while
measuring at most 30% of the grid (9 of 32 points), on several shapes.

Every grid is 4 server configs (max_num_seqs m = 8, 16, 32, 64) x 8 concurrencies (1 ... 128). Rows come from
closed formulas, monotone as tune assumes: output throughput rate(c) = r x c / (c + h) rises with load, TTFT p99
rises with load. The best feasible point of each ladder is its highest load that meets the SLO (its knee), and
the grid's best is the knee with the highest throughput; each test says which by hand.
"""

from __future__ import annotations

import pytest

from bench.config.slo import parse_slo
from bench.config.sweep import Point, Sweep
from bench.sweep.tune import tune

LOADS = [1, 2, 4, 8, 16, 32, 64, 128]
SEQS = [8, 16, 32, 64]
GRID = len(LOADS) * len(SEQS)
BUDGET = int(0.3 * GRID)  # 9: the goal, at most 30% of the grid
SLO = parse_slo("ttft_ms_p99<=1000")


def grid_sweep() -> Sweep:
    return Sweep(name="g", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                 hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
                 server={"model": "glm-4.5-tiny", "max_num_seqs": SEQS},
                 load={"concurrency": LOADS, "num_requests": 4}, workloads=[{"name": "w"}])


class Grid:
    """Rows from per-ladder formulas: `rate[m](c)` tok/s and `ttft[m](c)` ms; ladders in `failed` do not start."""

    def __init__(self, rate, ttft, failed=()):
        self.rate, self.ttft, self.failed = rate, ttft, set(failed)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, idx: int, p: Point) -> dict:
        m, c = p.server.max_num_seqs, p.load.concurrency
        assert (m, c) not in self.calls, "a point was measured twice"
        self.calls.append((m, c))
        if m in self.failed:
            return {"point_id": p.point_id, "status": "failed", "error": "engine failed to start: exit 1",
                    "max_num_seqs": m, "concurrency": c}
        return {"point_id": p.point_id, "status": "ok", "max_num_seqs": m, "concurrency": c,
                "output_tok_s": self.rate[m](c), "ttft_ms_p99": self.ttft[m](c)}


def saturating(r: float, h: float):
    return lambda c: r * c / (c + h)


def cliff(at: float, low: float = 100.0, high: float = 50_000.0):
    """TTFT that stays low up to `at` streams and jumps past it (requests queue behind a full batch)."""
    return lambda c: low if c <= at else high


def run(grid: Grid, slo=SLO):
    res = tune(grid_sweep(), slo, "output_tok_s", grid, verify=True)
    assert res.grid_size == GRID and res.verify_measured == GRID - res.points_measured
    return res


def pick(row) -> tuple[int, int]:
    return row["max_num_seqs"], row["concurrency"]


def searched(res) -> list[tuple[int, int]]:
    """The points the search measured, in order (verification's come after them in res.rows)."""
    return [pick(r) for r in res.rows[:res.points_measured]]


def test_slo_cliff_at_each_batch_limit_best_in_the_last_ladder():
    # ladder m meets the SLO up to c = m (cliff), so its knee is c = m; rate 1000 c/(c + 16) at every m:
    # knees 8 -> 333.3, 16 -> 500, 32 -> 666.7, 64 -> 800 tok/s: the best is the last ladder's knee (64, 64).
    # Ladders in increasing order of quality are the depth-first search's worst case: each one beats the last.
    rate = {m: saturating(1000.0, 16.0) for m in SEQS}
    grid = Grid(rate, {m: cliff(m) for m in SEQS})
    res = run(grid)
    assert pick(res.best) == (64, 64) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(1000.0 * 64 / 80)
    # m=8: bisection c=8 ok, c=32 no, c=16 no (3). m=16: warm start one above the knee c=8: c=16 ok, gallop up
    # c=32 no (2). m=32: c=32 ok, c=64 no (2). m=64: c=64 ok, c=128 no (2). 9 points in all.
    assert searched(res) == [(8, 8), (8, 32), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64),
                          (64, 128)]
    assert res.points_measured == BUDGET  # 28%, also in this order, the worst for a search ladder by ladder


def test_slo_cliff_best_in_the_first_ladder_prunes_the_rest():
    # the same cliffs, but the bigger batches are slower per stream: rate r_m c/(c + 16) with r_8 = 1000 and
    # r_m = 300 for the rest. Knee values: m=8: 333.3; m=16: 150, m=32: 200, m=64: 240. Best (8, 8).
    rate = {8: saturating(1000.0, 16.0), 16: saturating(300.0, 16.0), 32: saturating(300.0, 16.0),
            64: saturating(300.0, 16.0)}
    grid = Grid(rate, {m: cliff(m) for m in SEQS})
    res = run(grid)
    assert pick(res.best) == (8, 8) and res.found_grid_best is True
    # m=8 costs 3 as above (incumbent 333.3). m=16: warm start c=16 meets the SLO at 150 tok/s; the bound from
    # below leaves c=32 at most 300 (cannot win) and c=64 600, so the top is probed: c=128 misses with 266.7, which
    # bounds every lower load and cannot reach 333.3: pruned after 2. m=32 and m=64 the same: 2 each.
    assert searched(res) == [(8, 8), (8, 32), (8, 16), (16, 16), (16, 128), (32, 16), (32, 128),
                             (64, 16), (64, 128)]
    assert [lad.pruned for lad in res.ladders] == [False, True, True, True]
    assert res.points_measured == BUDGET


def test_flat_slo_everything_feasible_costs_one_point_per_ladder():
    # a loose SLO: every point meets it, so each ladder's best is its top load c=128. The first ladder bisects
    # up to it (c=8, 32, 64, 128: 4); each later one starts one above the last knee, capped at the top: 1 each.
    # rate at c=128: r_m x 128/144 with r = 400, 900, 700, 800 -> best m=16, 800 tok/s.
    rate = {8: saturating(400.0, 16.0), 16: saturating(900.0, 16.0), 32: saturating(700.0, 16.0),
            64: saturating(800.0, 16.0)}
    grid = Grid(rate, {m: (lambda c: 5.0 * c) for m in SEQS})  # 640 ms at c=128
    res = run(grid)
    assert pick(res.best) == (16, 128) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(900.0 * 128 / 144)
    assert searched(res) == [(8, 8), (8, 32), (8, 64), (8, 128), (16, 128), (32, 128), (64, 128)]  # 22%
    assert res.tie_decided is False  # rows without intervals are tied only when equal


def test_linear_latency_knees_spread_best_in_a_middle_ladder():
    # ttft = a_m x c: knee = largest c <= 1000 / a_m. a = 100 (knee 8), 40 (knee 16; 25 would be the limit),
    # 12 (knee 64; limit 83.3), 60 (knee 16; limit 16.7). rate 1000 c/(c + h_m) with h = 4, 16, 128, 8:
    # knees' rates: m=8: 666.7, m=16: 500, m=32: 333.3, m=64: 666.7. Tied values go to the first row measured;
    # the search and the grid agree on the value 666.67 either way.
    a = {8: 100.0, 16: 40.0, 32: 12.0, 64: 60.0}
    h = {8: 4.0, 16: 16.0, 32: 128.0, 64: 8.0}
    grid = Grid({m: saturating(1000.0, h[m]) for m in SEQS}, {m: (lambda c, a=a[m]: a * c) for m in SEQS})
    res = run(grid)
    assert res.best["output_tok_s"] == pytest.approx(1000.0 * 8 / 12)
    assert res.found_grid_best is True
    # m=8: c=8 ok, c=32 no, c=16 no (3). m=16: one above the knee, c=16 ok (500), c=32 no at 666.7, which
    # only ties (2). m=32: c=32 ok at 200 (so c=64 could reach 400 at most) -> the top, c=128: no at 500, which
    # cannot reach 666.7: pruned (2). m=64: c=32 no (800: may win) -> c=16 ok (666.7) (2).
    assert searched(res) == [(8, 8), (8, 32), (8, 16), (16, 16), (16, 32), (32, 32), (32, 128),
                             (64, 32), (64, 16)]
    assert res.points_measured == BUDGET


def test_ladders_that_fail_or_never_meet_the_slo_are_left_early():
    # m=8 and m=32 fail to start (a failed point meets no SLO and bounds nothing); m=64 misses the SLO even at
    # c=1. Only m=16 has feasible points: cliff at 16, rate 1000 c/(c + 16) -> best (16, 16), 500 tok/s.
    ttft = {8: cliff(8), 16: cliff(16), 32: cliff(32), 64: (lambda c: 5000.0)}
    grid = Grid({m: saturating(1000.0, 16.0) for m in SEQS}, ttft, failed={8, 32})
    res = run(grid)
    assert pick(res.best) == (16, 16) and res.found_grid_best is True
    # m=8 fails at its first point (1). m=16 is bisected as a first ladder: c=8 ok, c=32 no, c=16 ok (3).
    # m=32 fails at its warm start (1). m=64: c=32 no (666.7 may win), c=16 no (500 ties), c=4 no (200 cannot
    # reach 500 and bounds every lower load): 3. 8 points.
    assert searched(res) == [(8, 8), (16, 8), (16, 32), (16, 16), (32, 32), (64, 32), (64, 16), (64, 4)]
    assert [lad.server_failed for lad in res.ladders] == [True, False, True, False]


def test_nothing_feasible_anywhere():
    # the SLO is below every TTFT: no best, and the grid agrees
    grid = Grid({m: saturating(1000.0, 16.0) for m in SEQS}, {m: (lambda c: 100.0 + c) for m in SEQS})
    res = run(grid, parse_slo("ttft_ms_p99<=50"))
    assert res.best is None and res.grid_best is None and res.found_grid_best is True
    # m=8 bisects down to c=1 (3); once a ladder met the SLO nowhere, each later one starts at its lowest load,
    # and missing there ends it (monotone feasibility): 1 each
    assert searched(res) == [(8, 8), (8, 2), (8, 1), (16, 1), (32, 1), (64, 1)]


def test_knee_at_the_lowest_load_everywhere():
    # only c=1 meets the SLO (ttft 100 c^2 <= 150); rate 1000 c/(c + h) with h = 8, 4, 16, 2 at c=1:
    # 111.1, 200, 58.8, 333.3 -> best (64, 1).
    h = {8: 8.0, 16: 4.0, 32: 16.0, 64: 2.0}
    grid = Grid({m: saturating(1000.0, h[m]) for m in SEQS}, {m: (lambda c: 100.0 * c * c) for m in SEQS})
    res = run(grid, parse_slo("ttft_ms_p99<=150"))
    assert pick(res.best) == (64, 1) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(1000.0 / 3)
    # m=8: c=8, c=2 no, c=1 ok (3). m=16: c=2 no (333.3 may win) -> c=1 ok (200) (2). m=32: c=2 no at 111.1,
    # which cannot reach 200: pruned (1). m=64: c=2 no (500) -> c=1 ok (333.3) (2). 8 points.
    assert searched(res) == [(8, 8), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2), (64, 2), (64, 1)]


def test_a_tie_that_decides_is_reported():
    # two ladders, everything feasible (ttft 1 ms): m=8 tops out at 1000 +- 100 tok/s, m=16 at 1050 +- 100 on a
    # server that costs the same per hour: the intervals overlap, so they are tied and the better value (m=16)
    # wins; nothing strictly better than the pick exists: no tie decided. Then m=16's server costs 2x: the tie
    # goes to the cheaper m=8, although m=16 is strictly better: the tie decided, and the result says so.
    def rows(m, c, usd_h):
        rate = (1000.0 if m == 8 else 1050.0) * c / 128
        return {"status": "ok", "max_num_seqs": m, "concurrency": c, "ttft_ms_p99": 1.0, "output_tok_s": rate,
                "output_tok_s_ci_lo": rate - 100.0 * c / 128, "output_tok_s_ci_hi": rate + 100.0 * c / 128,
                "gpu_count": 1, "usd_per_gpu_hour": usd_h}

    sweep = Sweep(name="t", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                  hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
                  server={"model": "glm-4.5-tiny", "max_num_seqs": [8, 16]},
                  load={"concurrency": LOADS, "num_requests": 4}, workloads=[{"name": "w"}])
    for price_16, winner, decided in [(1.0, 16, False), (2.0, 8, True)]:
        def measure(idx, p, price_16=price_16):
            m = p.server.max_num_seqs
            return {"point_id": p.point_id, **rows(m, p.load.concurrency, price_16 if m == 16 else 1.0)}

        res = tune(sweep, SLO, "output_tok_s", measure)
        assert pick(res.best) == (winner, 128) and res.tie_decided is decided
