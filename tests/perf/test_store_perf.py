"""Per-point cost of the run store as a sweep grows (issue 25, item 5; `make perf`).

points.parquet used to be rebuilt from every row file after each point, so the cost of writing point N grew
with N (a million-point sweep slowed down point by point). A point now writes its requests and its row only;
the table is written once when the run ends and rebuilt by `load_results` when it is stale. This measures
`write_point` with 10 and with 10,000 rows already in the run directory (store-level, no engine): the two
should cost the same. Under the default `--benchmark-disable` each case runs once, as a check that every
row is still loaded. `test_append_cost_stays_flat_as_the_run_grows` asserts the flatness: it times appends
to a small and a large run side by side and fails when the large one's cost grows with its size.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.sweep.rows import validate_row
from bench.sweep.store import POINTS_FILE, ROWS_DIR, RunStore, load_results

ROUNDS = 20
SMALL_RUN, LARGE_RUN = 50, 2000  # rows already in the run: a 40x larger run
REPEATS = 30  # appends timed per run; the minimum is the figure (noise on a shared machine only adds time)
# An append to the 40x larger run may cost at most this many times one to the small run. Flat (what the store
# does: one row file written) measured 1.1-1.7 on a loaded 2-core machine (a larger directory is a little
# slower to create a file in); rebuilding the table on every append (issue 25) measured 10-11, since it reads
# every row file; 3 sits between with room for noise on both sides.
FLAT_RATIO_MAX = 3.0


def _row(i: int) -> dict[str, object]:
    return {"run_id": "perf", "point_id": f"p{i:07d}", "point_index": i, "status": "ok", "model": "glm-4.5-tiny",
            "concurrency": 1 + i % 64, "num_requests": 100, "completed": 100, "failed": 0, "output_tok_s": 100.0 + i,
            "ttft_ms_p50": 20.0, "tpot_ms_p50": 5.0}


def _store_with(tmp_path: Path, existing: int) -> RunStore:
    """A run dir already holding `existing` finished points (row files written directly: the setup is not
    what is measured)."""
    store = RunStore(tmp_path / "run")
    (store.dir / ROWS_DIR).mkdir(parents=True)
    for i in range(existing):
        (store.dir / ROWS_DIR / f"p{i:07d}.json").write_text(json.dumps(validate_row(_row(i))))
    return store


@pytest.mark.parametrize("existing", [10, 10_000])
def test_per_point_write_cost_stays_flat(benchmark, tmp_path, existing):
    store = _store_with(tmp_path, existing)
    index = itertools.count(existing)

    def write_one_point() -> None:
        store.write_point(_row(next(index)))

    rounds = ROUNDS if benchmark.enabled else 1
    benchmark.pedantic(write_one_point, rounds=rounds, iterations=1)
    written = next(index) - existing
    if benchmark.stats is not None:
        benchmark.extra_info["ms_per_point"] = benchmark.stats.stats.mean * 1e3
        benchmark.extra_info["rows_before"] = existing
    # the run still loads every row: the stale table is rebuilt from rows/ on load
    df = load_results(store.dir)
    assert len(df) == existing + written
    assert df["point_id"].is_unique and (store.dir / POINTS_FILE).is_file()


def _min_append_s(stores: list[RunStore], existing: list[int], append: Callable[[RunStore, dict[str, object]], object],
                  repeats: int) -> list[float]:
    """The fastest of `repeats` appends to each store, timed in turn (small, large, small, ...) so that a burst
    of load on the machine falls on both sides alike. CPU time of this process (user + system), not wall time:
    the store's own work, which is what grows when it re-reads the run, without the fsync waits and the
    preemption by other processes that made wall-time ratios swing 0.3-3x on a shared 2-core machine."""
    best = [float("inf")] * len(stores)
    for k in range(repeats):
        for j, store in enumerate(stores):
            row = _row(existing[j] + k)
            t0 = time.process_time()
            append(store, row)
            best[j] = min(best[j], time.process_time() - t0)
    return best


def test_append_cost_stays_flat_as_the_run_grows(tmp_path):
    sizes = [SMALL_RUN, LARGE_RUN]
    stores = [_store_with(tmp_path / f"n{n}", n) for n in sizes]
    small_s, large_s = _min_append_s(stores, sizes, RunStore.write_point, REPEATS)
    assert large_s / small_s < FLAT_RATIO_MAX, (
        f"an append costs {large_s * 1e3:.2f} ms with {LARGE_RUN} rows vs {small_s * 1e3:.2f} ms with {SMALL_RUN}: "
        "the per-point cost grows with the run")
    for store, n in zip(stores, sizes, strict=True):
        assert len(load_results(store.dir)) == n + REPEATS

    # the check has the power to see the old behaviour: an append that also rebuilds the table (every row read)
    def append_and_rebuild(store: RunStore, row: dict[str, object]) -> None:
        store.write_point(row)
        store.rebuild_table()

    grown = [n + REPEATS for n in sizes]
    small_q, large_q = _min_append_s(stores, grown, append_and_rebuild, 3)
    assert large_q / small_q > FLAT_RATIO_MAX, f"rebuild per append: {large_q / small_q:.1f}x, not caught"
