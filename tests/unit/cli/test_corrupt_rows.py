"""Issue 25 item 7: `report` and `margin --results` on a run whose row file holds a number as a string (or
whose points.parquet holds text in a number column) is one line naming the file, exit 2, no traceback; the
resume path sets such a row aside like a torn one."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.sweep.store import RunStore
from tests.unit.report.test_report import make_run


def _one_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def _break_row(run, **changes):
    row_file = sorted((run / "rows").glob("*.json"))[0]
    row = json.loads(row_file.read_text())
    row.update(changes)
    row_file.write_text(json.dumps(row))
    (run / "points.parquet").unlink()
    return row_file


@pytest.mark.parametrize("argv", [["report", "{run}", "--out", "{tmp}/rep"],
                                  ["margin", "--results", "{run}", "--price", "glm-4.5@zai"]])
def test_a_number_that_is_a_string_names_the_row_file(tmp_path, argv):
    run = make_run(tmp_path)
    row_file = _break_row(run, output_tok_s_per_gpu="abc")
    args = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv]
    line = _one_line(CliRunner().invoke(app, args))
    assert f"{row_file}: corrupt run file: row column(s) of the wrong type: output_tok_s_per_gpu='abc'" in line
    assert not (tmp_path / "rep").exists()


def test_a_torn_row_names_the_file(tmp_path):
    run = make_run(tmp_path)
    row_file = sorted((run / "rows").glob("*.json"))[1]
    row_file.write_text(row_file.read_text()[:20])
    (run / "points.parquet").unlink()
    line = _one_line(CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")]))
    assert line.startswith(f"error: {row_file}: corrupt run file: not a JSON row")


def test_text_in_a_number_column_of_the_table(tmp_path):
    run = make_run(tmp_path)
    df = pd.read_parquet(run / "points.parquet")
    df["ttft_ms_p50"] = df["ttft_ms_p50"].astype(str)
    df.to_parquet(run / "points.parquet", index=False)
    line = _one_line(CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")]))
    assert line.startswith(f"error: {run / 'points.parquet'}: corrupt run file: column ttft_ms_p50 holds values "
                           "that are not numbers")


def test_resume_sets_a_mistyped_row_aside(tmp_path):
    run = make_run(tmp_path)
    row_file = _break_row(run, completed="10")
    store = RunStore(run)
    good, bad = store.read_rows()
    assert bad == [row_file] and len(good) == 3
    assert store.set_aside_corrupt_rows() == [row_file.with_name(row_file.name + ".corrupt")]
    assert len(store.rebuild_table()) == 3  # the table is written from the rows that are rows


def test_an_integer_past_64_bits_names_the_row_file(tmp_path):
    """Found by tests/integration/test_fuzz.py: JSON integers are unbounded, a parquet column is not."""
    run = make_run(tmp_path)
    row_file = _break_row(run, output_tok_s_per_gpu=-(2**70))
    line = _one_line(CliRunner().invoke(app, ["margin", "--results", str(run), "--price", "glm-4.5@zai"]))
    assert line == (f"error: --results: {row_file}: corrupt run file: output_tok_s_per_gpu={-(2**70)} does not "
                    "fit a 64-bit integer")
