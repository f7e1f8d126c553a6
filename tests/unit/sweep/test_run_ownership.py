"""Issue 25, run ownership: a run directory is created atomically under a unique name, locked (flock on
<run_dir>/.lock) for the run's life, and `--resume` is refused (one line, exit 2) on a directory another run
holds or one that belongs to another sweep."""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.sweep import load_sweep
from bench.errors import UserInputError
from bench.sweep.prepare import prepare
from bench.sweep.run import open_run
from bench.sweep.store import LOCK_FILE, SWEEP_HASH_FILE, create_run_dir

CLOSED = "http://127.0.0.1:9"  # nothing listens


def _cfg(path: Path, name: str = "own", concurrency: list[int] | None = None) -> Path:
    path.write_text(yaml.safe_dump({
        "name": name, "engine": {"kind": "openai", "base_url": CLOSED},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0}, "server": {"model": "glm-4.5-tiny"},
        "load": {"concurrency": concurrency or [1], "num_requests": 1, "warmup_requests": 0, "timeout_s": 5},
        "workloads": [{"name": "w", "input_len": 8, "output_len": 4}],
    }))
    return path


def _one_line_exit_2(args: list[str]) -> str:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_racing_creators_of_one_name_get_distinct_directories(tmp_path):
    base = tmp_path / "out" / "s-20260101-000000"
    made: list[Path] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        made.append(create_run_dir(base))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8
    assert base in made and Path(f"{base}-8") in made


def test_a_fresh_run_dir_is_locked_by_its_run_and_stores_the_config_hash(tmp_path):
    sweep = load_sweep(_cfg(tmp_path / "s.yaml"))
    store, _ = open_run(sweep, tmp_path / "out")
    try:
        assert (store.dir / SWEEP_HASH_FILE).read_text().strip()
        assert int((store.dir / LOCK_FILE).read_text()) == os.getpid()
        fd = os.open(store.dir / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # held: flock conflicts across open file descriptions
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with pytest.raises(UserInputError, match=rf"is in use by another maas-bench run \(pid {os.getpid()}\)"):
            prepare(sweep, store.dir)
    finally:
        store.unlock()
    prepare(sweep, store.dir)  # released: the directory can be resumed


def test_resume_of_a_directory_held_by_another_process_is_one_line_exit_2(tmp_path):
    cfg = _cfg(tmp_path / "s.yaml")
    store, _ = open_run(load_sweep(cfg), tmp_path / "out")
    store.unlock()
    # another process's lock: an independent open file description holding flock, its pid in the file
    fd = os.open(store.dir / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, b"424242\n")
    before = sorted(p.name for p in store.dir.rglob("*"))
    try:
        line = _one_line_exit_2(["run", str(cfg), "--resume", str(store.dir)])
        assert f"run directory {store.dir} is in use by another maas-bench run (pid 424242)" in line
        # and open_run (the lock taken for real, after prepare's probe) refuses too
        with pytest.raises(UserInputError, match="pid 424242"):
            open_run(replace(prepare(load_sweep(cfg)), resume=store.dir), tmp_path / "out")
    finally:
        os.close(fd)
    assert sorted(p.name for p in store.dir.rglob("*")) == before  # nothing written into the held directory


def test_resume_into_another_sweeps_directory_is_refused(tmp_path):
    store, _ = open_run(load_sweep(_cfg(tmp_path / "a.yaml", name="alpha")), tmp_path / "out")
    store.unlock()
    other = _cfg(tmp_path / "b.yaml", name="beta")
    line = _one_line_exit_2(["run", str(other), "--resume", str(store.dir)])
    assert f"--resume: {store.dir} holds another sweep ('alpha'" in line and "'beta'" in line
    assert not list((store.dir / "rows").glob("*.json"))


def test_the_same_sweep_edited_resumes_with_a_config_changed_warning(tmp_path):
    store, _ = open_run(load_sweep(_cfg(tmp_path / "a.yaml")), tmp_path / "out")
    store.unlock()
    same = load_sweep(_cfg(tmp_path / "a.yaml"))
    again, warning = open_run(prepare(same, store.dir), tmp_path / "out")
    again.unlock()
    assert warning is None
    edited = load_sweep(_cfg(tmp_path / "a2.yaml", concurrency=[1, 2]))
    again, warning = open_run(prepare(edited, store.dir), tmp_path / "out")
    again.unlock()
    assert warning is not None and warning["type"] == "config_changed"
