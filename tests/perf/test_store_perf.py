"""Per-point cost of the run store as a sweep grows (issue 25, item 5; `make perf`).

points.parquet used to be rebuilt from every row file after each point, so the cost of writing point N grew
with N (a million-point sweep slowed down point by point). A point now writes its requests and its row only;
the table is written once when the run ends and rebuilt by `load_results` when it is stale. This measures
`write_point` with 10 and with 10,000 rows already in the run directory (store-level, no engine): the two
should cost the same. Under the default `--benchmark-disable` each case runs once, as a check that every
row is still loaded.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bench.sweep.rows import validate_row
from bench.sweep.store import POINTS_FILE, ROWS_DIR, RunStore, load_results

ROUNDS = 20


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
