"""tune on synthetic grids whose best point is known by construction: it must find that point while measuring at
most 30% of the grid (9 of 32 points, 4 of 16), on several shapes.

Most grids are 4 server configs (max_num_seqs m = 8, 16, 32, 64) x 8 concurrencies c (1 ... 128). Rows come from a
physical closed-loop model (`engine`): c clients on a server that runs at most m sequences keep b = min(c, m) of them
running and queue the rest, so
- every metric at c <= m depends on b = c alone: two configs that differ only in m give the same row at any load
  c <= both m (twins);
- throughput is R(b) = r b / (b + h), plus 2% once requests queue (c > m: a queued request takes a slot as soon as it
  frees) and no more however long the queue: R(m) x 1.02 for every c > m;
- TPOT is tpot(b); TTFT is ttft(b) plus, past m, a wait of one request's duration (out x tpot(m)) per batch of
  queued requests ahead: (c - m) / m x out x tpot(m).
`physical` checks both properties on every grid. Ladders are searched in decreasing max_num_seqs (64, 32, 16, 8);
each searches its loads up to c = 2m (bench.sweep.ladders.saturation_index): m=64: c=1..128 (indices 0..7),
m=32: 1..64 (0..6), m=16: 1..32 (0..5), m=8: 1..16 (0..4); the first probe of the first ladder is c = m (batch_guess).
Each test derives the grid's best and the search's probes by hand from those formulas and bench.sweep.tune's rules.

R(b) with r = 1000, h = 16, used below: R(1) = 58.82, R(2) = 111.1, R(4) = 200, R(8) = 333.33, R(16) = 500,
R(32) = 666.67, R(64) = 800.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.config.slo import parse_slo
from bench.config.sweep import Point, Sweep
from bench.sweep.tune import tune

LOADS = [1, 2, 4, 8, 16, 32, 64, 128]
SEQS = [8, 16, 32, 64]
GRID = len(LOADS) * len(SEQS)
BUDGET = int(0.3 * GRID)  # 9: the goal, at most 30% of the grid
SLO = parse_slo("ttft_ms_p99<=1000")

Model = Callable[[int, int], dict]


def sweep(seqs=SEQS, **server) -> Sweep:
    return Sweep(name="g", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                 hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
                 server={"model": "glm-4.5-tiny", "max_num_seqs": seqs, **server},
                 load={"concurrency": LOADS, "num_requests": 4}, workloads=[{"name": "w"}])


def engine(r: float = 1000.0, h: float = 16.0, ttft: Callable[[int], float] = lambda b: 100.0,
           tpot: Callable[[int], float] = lambda b: 10.0 + b, out: int = 100) -> Model:
    """The closed-loop model of the module docstring: (m, c) -> the row's metrics."""
    def row(m: int, c: int) -> dict:
        b = min(c, m)
        return {"output_tok_s": r * b / (b + h) * (1.02 if c > m else 1.0),
                "ttft_ms_p99": ttft(b) + (c - b) / m * out * tpot(m), "tpot_ms_p50": tpot(b)}
    return row


def physical(model: Model, seqs: list[int]) -> None:
    """Twins give one row below both batch limits; throughput past the batch limit grows by a few percent at most."""
    for c in LOADS:
        for ma in seqs:
            for mb in seqs:
                if c <= min(ma, mb):
                    assert model(ma, c) == model(mb, c)
            if c > ma:
                assert model(ma, c)["output_tok_s"] <= 1.05 * model(ma, ma)["output_tok_s"]


class Grid:
    """Rows from `models` (dtype -> model; a bare model is bfloat16); servers in `failed` ((dtype, m)) do not start."""

    def __init__(self, models: Model | dict[str, Model], failed=(), seqs=SEQS):
        self.models = models if isinstance(models, dict) else {"bfloat16": models}
        self.failed = set(failed)
        for model in self.models.values():
            physical(model, seqs)
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, idx: int, p: Point) -> dict:
        d, m, c = p.server.dtype, p.server.max_num_seqs, p.load.concurrency
        assert (d, m, c) not in self.calls, "a point was measured twice"
        self.calls.append((d, m, c))
        base = {"point_id": p.point_id, "dtype": d, "max_num_seqs": m, "concurrency": c}
        if (d, m) in self.failed:
            return {**base, "status": "failed", "error": "engine failed to start: exit 1"}
        return {**base, "status": "ok", **self.models[d](m, c)}


def run(grid: Grid, slo=SLO, sw: Sweep | None = None, size: int = GRID):
    res = tune(sw or sweep(), slo, "output_tok_s", grid, verify=True)
    assert res.grid_size == size and res.verify_measured == size - res.points_measured
    assert res.points_measured <= int(0.3 * size)  # the goal
    return res


def pick(row) -> tuple[int, int]:
    return row["max_num_seqs"], row["concurrency"]


def searched(res) -> list[tuple[int, int]]:
    """The points the search measured, in order (verification's come after them in res.rows)."""
    return [pick(r) for r in res.rows[:res.points_measured]]


def test_cliffs_at_each_batch_limit_best_in_the_last_ladder_searched():
    # TPOT grows with the running batch, tpot(b) = 5b ms (b=8: 40, b=16: 80, b=64: 320), and TTFT jumps past each
    # batch limit: ttft = 100 ms at c <= m, then 100 + (c - m)/m x 20 x 5m = 100 + 100 (c - m) ms (20 output tokens
    # a request): (8,16) 900, (8,32) 2500, (16,32) 1700, (32,64) 3300, (64,128) 6500. SLO tpot <= 50, ttft <= 1000.
    # Feasible: b <= 8 (tpot) and c - m <= 9 (ttft): m >= 16 meet it up to c=8, R(8) = 333.33 (the same row: twins);
    # m=8 caps its batch at 8, so its TPOT stays 40 and (8,16) meets it too, at 1.02 x R(8) = 340: the grid's best is
    # (8,16), in the last ladder searched, the smallest batch (the worst order for a search of the largest first).
    model = engine(ttft=lambda b: 100.0, tpot=lambda b: 5.0 * b, out=20)
    res = run(Grid(model), parse_slo("tpot_ms_p50<=50,ttft_ms_p99<=1000"))
    assert pick(res.best) == (8, 16) and res.found_grid_best is True and pick(res.grid_best) == (8, 16)
    assert res.best["output_tok_s"] == pytest.approx(1000.0 * 8 / 24 * 1.02)
    # m=64 (no incumbent): batch guess c=64: tpot 320, no. The trend: tpot only over the limit, in proportion:
    # 64 x 50/320 = 10 (ttft has one load, under it: no say) -> the highest load <= 10 below c=64: c=8: ok (333.33).
    # Then tpot between (8, 40) and (64, 320): 8 + 10 x 56/280 = 10; ttft 100 at both: flat, no limit -> knee 10;
    # no load left in (8, 64) is <= 10, so the next one up: c=16: tpot 80, no. Bracketed: knee 8 (3 points).
    # m=32: twins of m=64's rows at c <= 32: c=8 meets the SLO, c=16 misses it: bracketed before any probe (0).
    # m=16: the same twins, c=8 and c=16 (0). m=8: twins at c <= 8: c=8 meets it (lo); its top is c=16, whose bound
    # from below 333.33 x 16/8 = 666.7 reaches the incumbent 333.33; the trend has one load (no say); the warm start
    # is one above the last knee (8): c=16: tpot 40, ttft 900: ok, 340 (1). 4 points in all.
    assert searched(res) == [(64, 64), (64, 8), (64, 16), (8, 16)]
    assert [lad.measured for lad in res.ladders] == [3, 0, 0, 1]
    assert [lad.knee for lad in res.ladders] == [8, 8, 8, 16]


def test_slo_cliff_best_in_the_first_ladder_prunes_the_rest():
    # TTFT 100 ms up to each batch limit, then a queue: (c - m)/m x 100 x (10 + m) ms more, 1900 ms at (8,16) and more
    # for every larger m: every ladder meets ttft <= 1000 exactly up to c = m. Throughput R(b) = 1000 b/(b + 64),
    # nearly linear: knees m=64: R(64) = 500, m=32: R(32) = 333.33, m=16: R(16) = 200, m=8: R(8) = 111.11
    # (c = 2m is 2% more but misses the SLO). Best (64,64), the first ladder searched.
    res = run(Grid(engine(h=64.0)))
    assert pick(res.best) == (64, 64) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(500.0)
    # m=64: batch guess c=64: ok (500); the trend has one load (no say): gallop up, c=128: 7500 ms, no (2).
    # m=32: the last knee (64) sat at its batch limit, so the guess is this ladder's limit c=32 (no twin rows:
    # m=64 measured only c > 32): ok at 333.33; its bound at c=64, 666.7, reaches 500: gallop up, c=64: no (2).
    # m=16: the last knee (32) sat at its limit: c=16: ok at 200; the bound at c=32, 400, cannot reach 500 and c=32
    # is its top: pruned (1). m=8: the last ladder searched to its knee is m=32 (m=16 was pruned), at its limit:
    # c=8: ok at 111.1; the bound at c=16, 222.2, cannot reach 500: pruned (1). 6 points.
    assert searched(res) == [(64, 64), (64, 128), (32, 32), (32, 64), (16, 16), (8, 8)]
    assert [lad.pruned for lad in res.ladders] == [False, False, True, True]


def test_loose_slo_everything_feasible_each_ladder_tops_out():
    # ttft <= 5000 holds everywhere: TTFT 100 ms up to c = m, then 100 + (c - m)/m x 10 x (10 + m), at most
    # 100 + 15 x 180 = 2800 ms at (8,128). Each ladder's best is any load past its batch limit, R(m) x 1.02; the first
    # such load searched is c = 2m. Best: m=64's, 800 x 1.02 = 816 at (64,128) (c > 128 does not exist).
    model = engine(out=10)
    res = run(Grid(model), parse_slo("ttft_ms_p99<=5000"))
    assert pick(res.best) == (64, 128) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(816.0)
    # m=64: c=64 ok (800), gallop up: c=128 ok (816), its top (2). m=32: the last knee (128) >= its batch limit:
    # guess c=32: ok (666.7); bound at c=64 1333 reaches 816: c=64 ok (680) (2). m=16: knee 64 >= 32: c=16 ok (500);
    # bound 1000: c=32 ok (510) (2). m=8: knee 32 >= 16: c=8 ok (333.3); bound at c=16 666.7 < 816: pruned (1).
    assert searched(res) == [(64, 64), (64, 128), (32, 32), (32, 64), (16, 16), (16, 32), (8, 8)]  # 22%
    assert res.tie_decided is False  # rows without intervals are tied only when equal


def test_linear_latency_knees_spread_best_in_a_middle_ladder():
    # TTFT grows linearly with the running batch, 25 ms a sequence, and past m by 160 ms per batch of queued requests
    # (10 tokens at a flat 16 ms TPOT): ttft = 25 b + (c - m)/m x 160. With ttft <= 1000:
    #   m=64: c <= 32 (800); c=64 1600.              knee 32: R(32) = 666.67
    #   m=32: c=64 800 + 160 = 960; c=128 1280.      knee 64: 666.67 x 1.02 = 680
    #   m=16: c=32 560, c=64 880; c=128 1520.        knee 64: 500 x 1.02 = 510
    #   m=8:  c=16 360, c=32 680; c=64 1320.         knee 32: 333.33 x 1.02 = 340
    # Knees 32, 64, 64, 32; best (32,64) in a middle ladder, by the queue's 2% over m=64's knee.
    res = run(Grid(engine(ttft=lambda b: 25.0 * b, tpot=lambda b: 16.0, out=10)))
    assert pick(res.best) == (32, 64) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(680.0)
    # m=64: c=64: 1600, no; in proportion 64 x 1000/1600 = 40 -> c=32: ok (666.7): bracketed (2).
    # m=32: its twin (64,32) meets the SLO (lo = c=32); the guess is one above the last knee 32: c=64, whose bound
    # 1333 reaches 666.7: ok at 680, its top (1). m=16: the last knee (64) >= m=32's limit: guess c=16 (no twins:
    # nothing measured at c <= 16): ok (500); bound at c=32 1000 reaches 680: ok (510), its top (2). m=8: the last
    # knee (32) >= m=16's limit: c=8: ok (333.3); bound at c=16 666.7 < 680: pruned (1). 6 points.
    assert searched(res) == [(64, 64), (64, 32), (32, 64), (16, 16), (16, 32), (8, 8)]
    assert [lad.knee for lad in res.ladders] == [32, 64, 32, 8]
    assert [lad.measured for lad in res.ladders] == [2, 1, 2, 1]


def test_ladders_that_fail_or_never_meet_the_slo_are_left_early():
    # 2 dtypes x max_num_seqs 16, 64 (ladders of another dtype are not twins): 4 x 8 = 32 points, searched
    # (bf16, 64), (fp32, 64), (bf16, 16), (fp32, 16) (larger batches first, sweep order among equals). Both m=64
    # servers fail to start (no room for 64 sequences); fp32 prefills slowly: TTFT 2000 ms at every load, at half
    # bf16's throughput, so it never meets ttft <= 1000. bf16 at m=16 meets it up to c=16 (then 100 + 100 x 26 =
    # 2700 ms): the best is (bf16, 16, 16), R(16) = 500.
    models = {"bfloat16": engine(), "float32": engine(r=500.0, ttft=lambda b: 2000.0)}
    sw = sweep(seqs=[16, 64], dtype=["bfloat16", "float32"])
    res = run(Grid(models, failed={("bfloat16", 64), ("float32", 64)}, seqs=[16, 64]), sw=sw)
    assert (res.best["dtype"], *pick(res.best)) == ("bfloat16", 16, 16) and res.found_grid_best is True
    # (bf16, 64): batch guess c=64 fails to start: left (1). (fp32, 64): nothing met the SLO yet and no ladder was
    # measured without failing: its batch guess c=64, fails (1). (bf16, 16), searched as a first ladder (no incumbent,
    # no twin rows: its twin's only row is a failed start): c=16 ok (500), gallop up to its top c=32: 2700 ms, no (2).
    # (fp32, 16): the last knee (16) sat at its batch limit: c=16: 2000 ms, no, and its 250 tok/s bounds every lower
    # load, which cannot reach 500: pruned (1). 5 points.
    assert [(r["dtype"], *pick(r)) for r in res.rows[:res.points_measured]] == [
        ("bfloat16", 64, 64), ("float32", 64, 64), ("bfloat16", 16, 16), ("bfloat16", 16, 32), ("float32", 16, 16)]
    assert [lad.server_failed for lad in res.ladders] == [True, True, False, False]
    assert [lad.pruned for lad in res.ladders] == [False, False, False, True]


def test_nothing_feasible_anywhere():
    # the SLO is below every TTFT (100 + 5b ms at c <= m, more past it): no best, and the grid agrees
    grid = Grid(engine(ttft=lambda b: 100.0 + 5.0 * b))
    res = run(grid, parse_slo("ttft_ms_p99<=50"))
    assert res.best is None and res.grid_best is None and res.found_grid_best is True
    # m=64: c=64: 420 ms, no; in proportion 64 x 50/420 = 7.6 -> c=4: 120, no; 4 x 50/120 = 1.7 -> c=1: 105, no:
    # the lowest load misses, so does the ladder (3). m=32, 16, 8: their twin (64,1) misses the SLO at their lowest
    # load: nothing left to search (0 each).
    assert searched(res) == [(64, 64), (64, 4), (64, 1)]
    assert [lad.measured for lad in res.ladders] == [3, 0, 0, 0]


def test_knee_at_the_lowest_load_everywhere():
    # TTFT 100 b^2 ms: only c=1 meets ttft <= 150, at R(1) = 58.82 tok/s in every ladder (the same row: twins);
    # tied equal values go to the first row measured, (64,1), and the grid agrees.
    res = run(Grid(engine(ttft=lambda b: 100.0 * b * b)), parse_slo("ttft_ms_p99<=150"))
    assert pick(res.best) == (64, 1) and pick(res.grid_best) == (64, 1) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(1000.0 / 17)
    # m=64: c=64: 409600 ms, no; in proportion 64 x 150/409600 = 0.02, below every load: the lowest, c=1: ok. Between
    # (1, 100) and (64, 409600): 1 + 50 x 63/409500 = 1.008, no load in (1, 64) below it: the next up, c=2: 400, no
    # (3). m=32, 16, 8: twins (64,1) ok and (64,2) no bracket the knee at c=1 (0 each).
    assert searched(res) == [(64, 64), (64, 1), (64, 2)]
    assert [lad.knee for lad in res.ladders] == [1, 1, 1, 1]


def test_two_configs_tpot_slo_and_ttft_slo():
    # 2 x 8 = 16 points: max_num_seqs 16, 64. TPOT 10 + b ms (b=16: 26, b=32: 42, b=64: 74); TTFT 100 ms up to c = m,
    # then (c - m)/m x 100 x (10 + m) more: (16,32) 2700, (64,128) 7500. At most 4 of 16 points (30%) each.
    grid = Grid(engine(), seqs=[16, 64])
    res = run(grid, parse_slo("tpot_ms_p50<=30"), sw=sweep(seqs=[16, 64]), size=16)
    # tpot <= 30: b <= 16. m=64 meets it up to c=16 (500); m=16 never runs more than 16: every load meets it, c > 16 at
    # 510: best (16,32), the first such load (searched to c = 2m = 32; c=64, 128 give the same 510 and tie equal).
    assert pick(res.best) == (16, 32) and res.found_grid_best is True
    assert res.best["output_tok_s"] == pytest.approx(510.0)
    # m=64: c=64: 74, no; 64 x 30/74 = 25.9 -> c=16: 26, ok; between (16, 26) and (64, 74): 20, no load in (16, 64)
    # below it: c=32: 42, no (3). m=16: twin (64,16) ok (lo); guess one above the knee 16: c=32, its top, bound 1000
    # reaches 500: ok at 510 (1). 4 points.
    assert searched(res) == [(64, 64), (64, 16), (64, 32), (16, 32)]
    grid = Grid(engine(), seqs=[16, 64])
    res = run(grid, SLO, sw=sweep(seqs=[16, 64]), size=16)
    # ttft <= 1000: each ladder up to c = m: m=64 800, m=16 500: best (64,64).
    assert pick(res.best) == (64, 64) and res.found_grid_best is True
    # m=64: c=64 ok, gallop up c=128: 7500, no (2). m=16: the knee 64 sat at m=64's limit: c=16 ok (500); bound at
    # c=32 1000 reaches 800: c=32: 2700, no (2). 4 points.
    assert searched(res) == [(64, 64), (64, 128), (16, 16), (16, 32)]


def test_a_tie_that_decides_is_reported():
    # two servers with max_num_seqs 16: tp=1 (1 GPU) and tp=2 (2 GPUs, 5% faster; not twins), 2 x 8 = 16 points,
    # ttft <= 1000 met by every load searched (100 ms up to c=16, 100 + 10 x 26 = 360 at c=32). Throughput R(b) with
    # r = 1000 (tp=1) and 1050 (tp=2), +-10% 95% intervals: tops (c=32) 510 [459, 561] and 535.5 [482, 589]: they
    # overlap, tied. Search (both prices): tp=1 batch guess c=16 ok, gallop up c=32 ok, its top (2); tp=2: the last
    # knee (32) >= its limit 16: c=16 ok (525), bound 1050 reaches 510: c=32 ok (2). 4 points of 16.
    # Equal $/h (tp=2 GPUs at half price): the better value (tp=2, 32) wins, nothing beats it: no tie decided.
    # tp=2 at 2x $/h: the tie goes to the cheaper server's best, (tp=1, 32) at 510, although (tp=2, 32) is strictly
    # better: the tie decided, and the result says so.
    model = {1: engine(r=1000.0, out=10), 2: engine(r=1050.0, out=10)}
    sw = Sweep(name="t", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
               hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
               server={"model": "glm-4.5-tiny", "max_num_seqs": 16, "tensor_parallel_size": [1, 2]},
               load={"concurrency": LOADS, "num_requests": 4}, workloads=[{"name": "w"}])
    for model_ in model.values():
        physical(model_, [16])
    for usd_tp2, winner, decided in [(0.5, 2, False), (1.0, 1, True)]:
        def measure(idx, p, usd_tp2=usd_tp2):
            tp, c = p.server.tensor_parallel_size, p.load.concurrency
            row = model[tp](16, c)
            rate = row["output_tok_s"]
            return {"point_id": p.point_id, "status": "ok", "tp": tp, "concurrency": c, **row,
                    "output_tok_s_ci_lo": 0.9 * rate, "output_tok_s_ci_hi": 1.1 * rate,
                    "gpu_count": tp, "usd_per_gpu_hour": usd_tp2 if tp == 2 else 1.0}

        res = tune(sw, SLO, "output_tok_s", measure)
        assert (res.best["tp"], res.best["concurrency"]) == (winner, 32) and res.tie_decided is decided
        assert [(r["tp"], r["concurrency"]) for r in res.rows] == [(1, 16), (1, 32), (2, 16), (2, 32)]
        assert res.points_measured <= int(0.3 * res.grid_size) == 4
