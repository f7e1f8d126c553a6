"""Issue 18: bad sweep files fail at validation - one line, exit 2, nothing written under --out,
no server started - and the seven former tracebacks are one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from tests.unit.cli.bad_sweeps import BASE, SWEEP_CASES, sweep_with, write_run_dir


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _run_bad(tmp_path: Path, sweep: dict[str, Any] | bytes, *extra: str) -> str:
    """Run the CLI on a sweep; assert exit 2, one stderr line, nothing under --out; return the line."""
    cfg = tmp_path / "sweep.yaml"
    if isinstance(sweep, bytes):
        cfg.write_bytes(sweep)
    else:
        cfg.write_text(yaml.safe_dump(sweep, sort_keys=False))
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out), *extra])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = _lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert list(out.rglob("*")) == [], "bad input must not write anything"
    assert not (tmp_path.parent / "escape").exists()
    return lines[0]


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_bad_sweep_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, case):
    monkeypatch.delenv("MAAS_BENCH_TEST_UNSET_KEY", raising=False)
    sweep, fragments = SWEEP_CASES[case]
    line = _run_bad(tmp_path, sweep)
    for f in fragments:
        assert f in line, (f, line)


GOOD_ROW = '{"timestamp": 0, "input_len": 8, "output_len": 4}\n'


@pytest.mark.parametrize("text,fragment", [
    (None, "no such file"),
    (GOOD_ROW + "not json\n", ":2:"),
    ("", "no rows"),
    ('{"timestamp": 0, "input_len": 600, "output_len": 4}\n', "604"),
])
def test_trace_problems_fail_before_the_run_dir(tmp_path, text, fragment):
    trace = tmp_path / "trace.jsonl"
    if text is not None:
        trace.write_text(text)
    line = _run_bad(tmp_path, sweep_with(workloads=[{"name": "t", "kind": "trace", "trace_path": str(trace)}]))
    assert fragment in line


@pytest.mark.parametrize("data,fragment", [
    (b"name: bad\nserver: {model: \xff}\n", "not valid UTF-8"),
    (b"name: bad\x00\n", "NUL byte"),
    (yaml.safe_dump(BASE).replace("name: bad", "name: bad\nname: other").encode(), "duplicate key 'name'"),
])
def test_unreadable_config_files_are_one_line(tmp_path, data, fragment):
    assert fragment in _run_bad(tmp_path, data)


def test_directory_as_config_says_directory(tmp_path):
    r = CliRunner().invoke(app, ["run", str(tmp_path), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert _lines(r.stderr) == [f"error: {tmp_path}: is a directory, not a YAML file"]


def _report(*args: str) -> Any:
    return CliRunner().invoke(app, ["report", *args])


@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x00trunc"])
def test_report_on_unreadable_parquet_without_rows_is_one_line(tmp_path, content):
    run = write_run_dir(tmp_path, rows=False)
    (run / "points.parquet").write_bytes(content)
    r = _report(str(run), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 2, r.output
    lines = _lines(r.stderr)
    assert len(lines) == 1 and ("points.parquet" in lines[0] or "no points" in lines[0]), lines


def test_report_rebuilds_a_truncated_parquet_from_rows(tmp_path):
    run = write_run_dir(tmp_path)
    (run / "points.parquet").write_bytes(b"PAR1trunc")
    r = _report(str(run), "--out", str(tmp_path / "rep"))
    assert "Traceback" not in r.output and not isinstance(r.exception, Exception) or r.exit_code in (0, 2)
    assert len(pd.read_parquet(run / "points.parquet")) == 2  # rebuilt from rows/


@pytest.mark.parametrize("target", ["sweep.yaml", "points.parquet"])
def test_report_given_a_file_is_one_line(tmp_path, target):
    run = write_run_dir(tmp_path)
    r = _report(str(run / target), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 2
    lines = _lines(r.stderr)
    assert len(lines) == 1 and "is a file" in lines[0]


def test_report_with_markup_in_error_text_does_not_crash(tmp_path):
    run = write_run_dir(tmp_path, error="HTTP 404 at [/v1/completions] [/red]")
    r = _report(str(run), "--out", str(tmp_path / "rep"))
    assert "MarkupError" not in repr(r.exception) and "Traceback" not in r.output
    assert r.exit_code in (0, 2), (r.exit_code, r.output)
    if r.exit_code == 2:
        assert len(_lines(r.stderr)) == 1


def test_keep_failed_needs_resume(tmp_path):
    assert "--keep-failed" in _run_bad(tmp_path, BASE, "--keep-failed")
