"""The results catalog (bench.report.catalog): runs found under roots, `source` kept or derived, the index
kept fresh incrementally, and no run folder ever written.

`make_catalog` is the small hand-made catalog the query and compare tests share (their expected rows are
worked out by hand from it, in HAND below).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.errors import UserInputError
from bench.report.catalog import CATALOG_DIR, MANIFEST_FILE, index_root, list_runs, load_catalog, read_run
from bench.sweep.rows import validate_row

# Six ok points and one failed one in three runs. Every point: 10 requests of 2,000 input and 500 output
# tokens; interactivity = 1000 / TPOT p50. H100 rows cost $2.00/GPU-hour, H200 rows $3.00.
#   point  run         gpu   quant  engine   tok/s/GPU  tok/s/user  TTFT p90  TPOT p90   $/M output at U=0.4
#   A      r1-h100     h100  fp8    vllm     1000       50          400       25         2e6/(1440*1000) = 1.3889
#   B      r1-h100     h100  fp8    vllm     2000       20          1500      60         2e6/(1440*2000) = 0.6944
#   C      r1-h100     h100  fp8    vllm      500       40          450       28         2e6/(1440*500)  = 2.7778
#   X      r1-h100     h100  fp8    vllm     (failed)
#   D      r2-h200     h200  none   vllm     1800       60          300       20         3e6/(1440*1800) = 1.1574
#   E      r2-h200     h200  none   vllm     2500       10          3000      120        3e6/(1440*2500) = 0.8333
#   F      r3-virtual  h100  fp8    virtual  3000       35          200       40         2e6/(1440*3000) = 0.4630
# SLO tiers (the report's ladder, p90): interactive TTFT<=500 & TPOT<=30: A, C, D; standard TTFT<=2000 &
# TPOT<=100: A, B, C, D, F; batch: all.
POINTS = {
    "A": ("r1-h100", 1000.0, 50.0, 400.0, 25.0), "B": ("r1-h100", 2000.0, 20.0, 1500.0, 60.0),
    "C": ("r1-h100", 500.0, 40.0, 450.0, 28.0), "D": ("r2-h200", 1800.0, 60.0, 300.0, 20.0),
    "E": ("r2-h200", 2500.0, 10.0, 3000.0, 120.0), "F": ("r3-virtual", 3000.0, 35.0, 200.0, 40.0),
}
RUNS = {  # run -> (sweep name, gpu, quantization, engine, $/GPU-hour, started_at date)
    "r1-h100": ("fp8-h100", "h100", "fp8", "vllm", 2.0, "2026-11-01"),
    "r2-h200": ("bf16-h200", "h200", "none", "vllm", 3.0, "2026-11-02"),
    "r3-virtual": ("est-h100", "h100", "fp8", "virtual", 2.0, "2026-11-03"),
}
HAND = {
    # cheapest $/M output per SLO tier, and the frontier (max tok/s/GPU and tok/s/user), by filter
    "all": {"interactive": "D", "standard": "F", "batch": "F", "frontier": {"D", "F"}},
    "source=measured": {"interactive": "D", "standard": "B", "batch": "B", "frontier": {"B", "D", "E"}},
    "source=measured,gpu=h100": {"interactive": "A", "standard": "B", "batch": "B", "frontier": {"A", "B"}},
}
USD_PER_M_OUTPUT = {"A": 1.3889, "B": 0.69444, "C": 2.7778, "D": 1.15741, "E": 0.83333, "F": 0.46296}


def point_row(name: str, run: str, tok: float | None, inter: float | None, ttft: float | None,
              tpot: float | None) -> dict[str, Any]:
    sweep, gpu, quant, engine, rate, day = RUNS[run]
    row: dict[str, Any] = {
        "run_id": run, "point_id": f"pt-{name}", "point_index": ord(name) - 65, "status": "ok",
        "model": "glm-4.5", "engine": engine, "dtype": "bfloat16", "quantization": quant, "gpu_type": gpu,
        "gpu_count": 1, "usd_per_gpu_hour": rate, "workload": "chat-2k", "concurrency": 8, "num_requests": 10,
        "completed": 10, "input_tokens": 20000, "output_tokens": 5000, "output_tok_s_per_gpu": tok,
        "interactivity_tok_s_user": inter, "ttft_ms_p90": ttft, "tpot_ms_p90": tpot,
        "tpot_ms_p50": 1000.0 / inter if inter else None, "started_at": f"{day}T10:00:00Z",
    }
    if tok is None:
        row.update(status="failed", error="engine failed to start: fixture", completed=0, output_tokens=None,
                   input_tokens=None)
    return validate_row(row)


def write_run(root: Path, run: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """A run folder as a run leaves it: sweep.yaml, rows/<point_id>.json and points.parquet."""
    d = root / run
    (d / "rows").mkdir(parents=True)
    (d / "sweep.yaml").write_text(f"name: {RUNS[run][0] if run in RUNS else run}\n")
    for r in rows:
        (d / "rows" / f"{r['point_id']}.json").write_text(json.dumps(r))
    df = pd.DataFrame([{**r, **(extra or {})} for r in rows])
    df.to_parquet(d / "points.parquet", index=False)
    return d


def make_catalog(root: Path) -> Path:
    """The hand-made catalog above under `root` (r2 nested one folder deeper, as sweeps are grouped)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for name, (run, *vals) in POINTS.items():
        by_run.setdefault(run, []).append(point_row(name, run, *vals))
    by_run["r1-h100"].append(point_row("X", "r1-h100", None, None, None, None))
    write_run(root, "r1-h100", by_run["r1-h100"])
    write_run(root / "h200", "r2-h200", by_run["r2-h200"])
    write_run(root, "r3-virtual", by_run["r3-virtual"])
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` but the catalog's own folder, with its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and CATALOG_DIR not in p.parts}


def test_lists_every_run_with_its_counts_and_source(tmp_path: Path) -> None:
    cat = load_catalog([make_catalog(tmp_path)])
    runs = {r["run_id"]: r for r in list_runs(cat)}
    assert set(runs) == {"r1-h100", "r2-h200", "r3-virtual"}
    r1, r2, r3 = runs["r1-h100"], runs["r2-h200"], runs["r3-virtual"]
    assert (r1["points_ok"], r1["points_failed"]) == (3, 1)
    assert (r2["points_ok"], r2["points_failed"]) == (2, 0)
    assert r1["sweep_name"] == "fp8-h100" and r1["gpu_type"] == "h100" and r1["date"] == "2026-11-01"
    assert r2["run_dir"] == str(tmp_path / "h200" / "r2-h200")  # nested folders are found
    assert (r1["source"], r2["source"], r3["source"]) == ("measured", "measured", "virtual")
    assert r3["engine"] == "virtual"
    assert [r["run_id"] for r in list_runs(cat)] == ["r1-h100", "r2-h200", "r3-virtual"]  # by date


def test_a_source_the_run_wrote_is_kept(tmp_path: Path) -> None:
    d = write_run(tmp_path, "imp", [point_row("A", "r1-h100", 1000.0, 50.0, 400.0, 25.0)],
                  extra={"source": "imported"})
    assert read_run(d, tmp_path).column("source").to_pylist() == ["imported"]


def test_index_is_incremental_and_never_touches_a_run_folder(tmp_path: Path) -> None:
    root = make_catalog(tmp_path)
    before = snapshot(root)
    first = index_root(root)
    assert (first.runs, first.reread, first.written, len(first.parts)) == (3, 3, True, 1)
    assert (root / CATALOG_DIR / MANIFEST_FILE).is_file()
    again = index_root(root)
    assert (again.reread, again.written, again.rows, again.parts) == (0, False, 7, first.parts)
    # a new run is visible at once; only it is read, into a part of its own (the old part is kept as it is)
    first_part = first.parts[0].read_bytes()
    write_run(root, "r4", [point_row("A", "r1-h100", 1000.0, 50.0, 400.0, 25.0)])
    after_new = index_root(root)
    assert (after_new.reread, after_new.rows, len(after_new.parts)) == (1, 8, 2)
    assert first.parts[0] in after_new.parts and first.parts[0].read_bytes() == first_part
    assert sorted(load_catalog([root]).read("SELECT point_id FROM cat WHERE run_dir = 'r4'").column(0).to_pylist()) \
        == ["pt-A"]
    # a run that is gone is dropped: its part goes, nothing is read from the run folders
    import shutil

    shutil.rmtree(root / "r4")
    gone = index_root(root)
    assert (gone.reread, gone.written, gone.rows, gone.parts) == (0, True, 7, first.parts)
    assert snapshot(root) == before  # no run folder was written, by any of the calls
    # a changed run is read again; the unchanged runs of its part move to the new part with it
    (root / "r3-virtual" / "sweep.yaml").write_text("name: renamed\n")
    before = snapshot(root)
    changed = index_root(root)
    assert (changed.reread, changed.rows, len(changed.parts)) == (1, 7, 1) and changed.parts != first.parts
    names = {r["run_id"]: r["sweep_name"] for r in list_runs(load_catalog([root]))}
    assert names == {"r1-h100": "fp8-h100", "r2-h200": "bf16-h200", "r3-virtual": "renamed"}
    assert snapshot(root) == before


def test_rows_newer_than_the_table_are_read_without_rewriting_the_table(tmp_path: Path) -> None:
    d = write_run(tmp_path, "going", [point_row("A", "r1-h100", 1000.0, 50.0, 400.0, 25.0)])
    table_bytes = (d / "points.parquet").read_bytes()
    late = point_row("B", "r1-h100", 2000.0, 20.0, 1500.0, 60.0)
    (d / "rows" / f"{late['point_id']}.json").write_text(json.dumps(late))  # a point finished after the table
    ix = index_root(tmp_path)
    assert sorted(ix.read(["point_id"]).column("point_id").to_pylist()) == ["pt-A", "pt-B"]
    assert (d / "points.parquet").read_bytes() == table_bytes


def test_an_unreadable_run_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = make_catalog(tmp_path)
    bad = root / "torn"
    bad.mkdir()
    (bad / "points.parquet").write_bytes(b"PAR1 not really")
    cat = load_catalog([root])
    assert len(list_runs(cat)) == 3
    assert any("torn" in w and "skipped" in w for w in cat.warnings)


def test_a_read_only_root_is_read_in_memory(tmp_path: Path) -> None:
    root = make_catalog(tmp_path)
    ix = index_root(root, write=False)
    assert ix.rows == 7 and not ix.written and not (root / CATALOG_DIR).exists()


def test_missing_root_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a directory"):
        load_catalog([tmp_path / "nope"])


def test_cli_catalog_json_and_bad_root(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["catalog", str(make_catalog(tmp_path)), "--json"])
    assert res.exit_code == 0, res.output
    assert sorted(r["run_id"] for r in json.loads(res.stdout)) == ["r1-h100", "r2-h200", "r3-virtual"]
    res = runner.invoke(app, ["catalog", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "not a directory" in res.output
