"""Issue 25, item 5: a point appends its row; points.parquet is written when the run ends and rebuilt by
`load_results` whenever it is older than rows/ (a killed run, a resume that added or replaced rows), so
every row is always loaded. The cost per point is measured in tests/perf/test_store_perf.py."""

from __future__ import annotations

import os

from bench.sweep.store import POINTS_FILE, RunStore, load_results, table_is_fresh


def _row(i: int, status: str = "ok") -> dict[str, object]:
    return {"run_id": "r", "point_id": f"p{i}", "point_index": i, "status": status, "model": "glm-4.5-tiny",
            "completed": 4 if status == "ok" else 0}


def _store(tmp_path) -> RunStore:
    store = RunStore(tmp_path / "run")
    (store.dir / "rows").mkdir(parents=True)
    return store


def test_a_point_writes_its_row_and_not_the_table(tmp_path):
    store = _store(tmp_path)
    store.write_point(_row(0))
    assert (store.dir / "rows" / "p0.json").is_file()
    assert not (store.dir / POINTS_FILE).exists()


def test_a_killed_run_without_a_table_loads_every_row(tmp_path):
    store = _store(tmp_path)
    for i in range(3):
        store.write_point(_row(i))
    df = load_results(store.dir)  # as after a kill: rows only
    assert list(df["point_id"]) == ["p0", "p1", "p2"]
    assert (store.dir / POINTS_FILE).is_file()  # rebuilt in place


def test_rows_added_after_the_table_are_loaded(tmp_path):
    store = _store(tmp_path)
    store.write_point(_row(0))
    store.write_table(store.rows())
    store.write_point(_row(1))  # a resumed run's new point, before that run wrote its table
    assert list(load_results(store.dir)["point_id"]) == ["p0", "p1"]


def test_a_row_replaced_after_the_table_is_loaded_as_replaced(tmp_path):
    store = _store(tmp_path)
    store.write_point(_row(0, status="failed"))
    store.write_table(store.rows())
    store.write_point(_row(0, status="ok"))  # --resume measured the failed point again: same count of rows
    df = load_results(store.dir)
    assert list(df["status"]) == ["ok"] and list(df["completed"]) == [4]


def test_a_fresh_table_is_read_not_rebuilt(tmp_path):
    store = _store(tmp_path)
    store.write_point(_row(0))
    store.write_table(store.rows())
    table = store.dir / POINTS_FILE
    later = os.stat(store.dir / "rows").st_mtime_ns + 1_000_000_000
    os.utime(table, ns=(later, later))  # written a second after the last row
    assert table_is_fresh(store.dir, 1) and not table_is_fresh(store.dir, 2)
    inode = table.stat().st_ino
    assert list(load_results(store.dir)["point_id"]) == ["p0"]
    assert table.stat().st_ino == inode and table.stat().st_mtime_ns == later  # not rewritten
