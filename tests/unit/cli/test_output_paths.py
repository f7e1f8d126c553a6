"""Issue 25 B: a bad output path and a corrupt run file are one line naming the file and the problem,
exit 2, no traceback, nothing partial left behind (`run --out`, `report`, `margin --results`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from tests.unit.cli.bad_sweeps import BASE, write_run_dir

PRICE = ["--price", "glm-4.5-air@zai"]


def _one_line(r: Any, *needles: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _run_out(tmp_path: Path, out: Path) -> Any:
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    return CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])


# --- run --out ---------------------------------------------------------------------------------


def test_out_that_is_a_file(tmp_path):
    out = tmp_path / "results"
    out.write_text("not a dir")
    _one_line(_run_out(tmp_path, out), "--out", str(out), "is a file, not a directory")
    assert out.read_text() == "not a dir"


def test_out_under_a_file_stands_in_for_a_read_only_dir(tmp_path):
    # root ignores chmod, so a directory that cannot be created is simulated by a path under a regular file
    # (NotADirectoryError when created)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "sub" / "results"
    _one_line(_run_out(tmp_path, out), "--out", str(out), f"{blocker} is a file, not a directory")
    assert {p.name for p in tmp_path.iterdir()} == {"blocker", "sweep.yaml"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500; covered by the under-a-file case")
def test_out_in_a_read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line(_run_out(tmp_path, ro / "results"), "--out", "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_out_name_too_long(tmp_path):
    out = tmp_path / ("r" * 300)
    _one_line(_run_out(tmp_path, out), "--out", "longer than", "File name too long")
    assert {p.name for p in tmp_path.iterdir()} == {"sweep.yaml"}


def test_out_dangling_symlink(tmp_path):
    out = tmp_path / "results"
    out.symlink_to(tmp_path / "gone")
    _one_line(_run_out(tmp_path, out), "--out", str(out), "dangling symlink")
    assert not (tmp_path / "gone").exists()


def test_report_out_that_is_a_file(tmp_path):
    run = write_run_dir(tmp_path)
    out = tmp_path / "rep"
    out.write_text("x")
    _one_line(CliRunner().invoke(app, ["report", str(run), "--out", str(out)]), "--out", "is a file")


# --- corrupt run files -----------------------------------------------------------------------


CORRUPT = {
    "env.json invalid": ("env.json", b"{not json", "invalid JSON"),
    "env.json truncated": ("env.json", b'{"python": "3.11", "vllm', "invalid JSON"),
    "env.json not an object": ("env.json", b"[1, 2]", "not a JSON object"),
    "env.json not utf-8": ("env.json", b'{"a": "\xff"}', "not UTF-8"),
    "sweep.yaml invalid": ("sweep.yaml", b"name: [unclosed\n", "invalid YAML"),
    "sweep.yaml truncated": ("sweep.yaml", yaml.safe_dump(BASE).encode()[:37] + b"\n  - {a: ", "invalid YAML"),
    "sweep.yaml not a mapping": ("sweep.yaml", b"- just\n- a list\n", "not a mapping"),
    "sweep.yaml alias bomb": ("sweep.yaml", b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"b{i}: &b{i} [{', '.join(['*b' + str(i - 1) if i else '*a'] * 10)}]\n".encode() for i in range(9)),
        "MAX_YAML_NODES"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_report_on_a_corrupt_run_file(tmp_path, case):
    name, content, problem = CORRUPT[case]
    run = write_run_dir(tmp_path)
    (run / name).write_bytes(content)
    rep = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(rep)])
    _one_line(r, str(run / name), problem)
    assert not rep.exists() or list(rep.rglob("*")) == []


def test_margin_results_on_a_corrupt_points_parquet(tmp_path):
    run = write_run_dir(tmp_path, rows=False)
    (run / "points.parquet").write_bytes(b"PAR1\x00garbage")
    r = CliRunner().invoke(app, ["margin", "--results", str(run), *PRICE])
    _one_line(r, "--results", str(run / "points.parquet"), "unreadable")


def test_margin_results_on_a_corrupt_parquet_file_given_directly(tmp_path):
    p = tmp_path / "points.parquet"
    p.write_bytes(b"PAR1\x00garbage")
    _one_line(CliRunner().invoke(app, ["margin", "--results", str(p), *PRICE]), str(p), "not a readable parquet")


# --- a full disk while the report writes -------------------------------------------------------


def test_report_on_a_full_disk_leaves_no_partial_png(tmp_path, monkeypatch):
    import bench.atomic

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    run = write_run_dir(tmp_path)
    rep = tmp_path / "rep"
    monkeypatch.setattr(bench.atomic.os, "fsync", full)
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(rep)])
    line = _one_line(r, "No space left on device")
    assert line.startswith(f"error: {rep}/") and line.split(":")[1].endswith(".png"), line  # names the figure
    assert [p for p in rep.rglob("*") if p.is_file()] == [], "no 0-byte PNG, no temp file"
