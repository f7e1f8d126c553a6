"""A sweep against the simulated server records where its wall time went (row columns, group_done events,
timing.json) and measures `load.until` points in rounds (bench.sweep.timing, bench.measure.loadgen)."""

from __future__ import annotations

import json

import pytest

from bench.config.sweep import Sweep
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results


@pytest.fixture(scope="module")
def sim_url():
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=10, itl_ms=2))
    yield url
    stop_sim_subprocess(proc)


def test_wall_time_buckets_and_until_rounds(tmp_path, sim_url):
    sweep = Sweep(name="wall", engine={"kind": "openai", "base_url": sim_url, "ignore_eos": True},
                  hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, server={"model": "glm-4.5-tiny"},
                  load={"concurrency": [2, 4], "num_requests": 12, "warmup_requests": 4,
                        "until": {"throughput_rel_ci": 1e-9, "max_requests": 30}},  # never tight: the cap ends it
                  workloads=[{"name": "w", "input_len": 8, "output_len": 16}])
    events = []
    summary = run_sweep(sweep, out_root=tmp_path, progress=events.append)
    df = load_results(summary.run_dir)
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    # until: rounds of 12, 12, then 6 to reach the cap of 30 measured requests
    assert df["until_rounds"].tolist() == [3, 3] and df["num_requests"].tolist() == [30, 30]
    phases = df[["warmup_wall_s", "measure_wall_s", "cooldown_wall_s"]]
    assert (phases > 0).all().all()
    assert (phases.sum(axis=1) <= df["point_wall_s"]).all()
    # the measured phase's clock brackets the measured window (first send to last end) from outside
    assert (df["measure_wall_s"] >= df["duration_s"] - 1e-3).all()
    timing = json.loads((summary.run_dir / "timing.json").read_text())
    run, (group,) = timing["run"], timing["groups"]
    assert run["measure_s"] == pytest.approx(df["measure_wall_s"].sum(), abs=0.01)
    assert run["point_other_s"] == pytest.approx((df["point_wall_s"] - phases.sum(axis=1)).sum(), abs=0.01)
    parts = ("server_start_s", "warmup_s", "measure_s", "cooldown_s", "point_other_s", "server_stop_s", "other_s")
    assert sum(run[k] for k in parts) == pytest.approx(run["wall_s"], abs=0.01)
    assert {k: group[k] for k in parts[:-1]} == {k: run[k] for k in parts[:-1]}  # one group: the run's buckets
    done = [e for e in events if e["type"] == "group_done"]
    assert len(done) == 1 and done[0]["timing"] == group
    assert summary.timing == timing
