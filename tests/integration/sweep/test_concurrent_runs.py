"""Issue 25: three identical `maas-bench run --out X` started together used to share one run directory
(a 1-second run id, and an existence check apart from the mkdir). Each must get its own, with all its rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from bench.config.sweep import load_sweep
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess


@pytest.fixture(scope="module")
def sim_url():
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=5, itl_ms=2))
    yield url
    stop_sim_subprocess(proc)


def test_three_runs_started_together_get_three_directories_each_with_all_rows(tmp_path, sim_url):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "same", "engine": {"kind": "openai", "base_url": sim_url, "ignore_eos": True},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
        "load": {"concurrency": [1, 2], "num_requests": 4, "warmup_requests": 0},
        "workloads": [{"name": "w", "input_len": 16, "output_len": 8}],
    }))
    ids = {p.point_id for p in load_sweep(cfg).points()}
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "run", str(cfg), "--out", str(out), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    dirs = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(dirs) == 3, dirs
    printed = set()
    for stdout, _ in results:
        rows = json.loads(stdout)
        assert {r["point_id"] for r in rows} == ids
        (run_id,) = {r["run_id"] for r in rows}
        printed.add(run_id)
    assert printed == {d.name for d in dirs}  # each run reported its own directory
    for d in dirs:
        files = {json.loads(f.read_text())["point_id"] for f in (d / "rows").glob("*.json")}
        assert files == ids, d
        assert {f.stem for f in (d / "requests").glob("*.parquet")} == ids
        assert all(json.loads(f.read_text())["run_id"] == d.name for f in (d / "rows").glob("*.json"))
