"""`maas-bench tune` end to end against the simulated server, on a case whose answer follows from the sim.

The sim serves at most 4 streams at once (FIFO queue beyond), TTFT 80 ms, 20 ms per token, 10 output
tokens: one request holds a slot for 80 + 9*20 = 260 ms. Up to concurrency 4 nobody queues (TTFT ~80 ms);
at 8, half the requests wait one full request (~260 ms) first, so TTFT p99 >= 340 ms. With the SLO
ttft_ms_p99<=200 (120 ms of headroom at c=4: on a loaded 2-core machine a 20 ms TTFT once went past a 50 ms
limit) the knee of the ladder 1, 2, 4, 8, 16 is 4, which also has the highest throughput
(lowest $/M output) of the feasible loads. Bisection: index 2 (c=4, ok), index 3 (c=8, miss): 2 points.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess


@pytest.fixture(scope="module")
def sim_url():
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=80, itl_ms=20, max_concurrent_streams=4))
    yield url
    stop_sim_subprocess(proc)


def test_tune_finds_the_knee_with_two_points_then_verify_on_resume(tmp_path, sim_url):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tune", "engine": {"kind": "openai", "base_url": sim_url, "ignore_eos": True},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
        "load": {"concurrency": [1, 2, 4, 8, 16], "num_requests": 8, "warmup_requests": 0},
        "workloads": [{"name": "w", "input_len": 8, "output_len": 10}],
    }))
    runner = CliRunner()
    res = runner.invoke(app, ["tune", str(cfg), "--slo", "ttft_ms_p99<=200", "--out", str(tmp_path / "out"),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["grid_size"] == 5 and out["points_measured"] == 2
    assert [r["concurrency"] for r in out["rows"]] == [4, 8]
    assert out["best"]["concurrency"] == 4 and out["found_grid_best"] is None
    assert out["rows"][1]["ttft_ms_p99"] > 320  # c=8 queued behind a full 260 ms request
    run_dir = out["run_dir"]

    # resume the same run with --verify: the two points are reused, the other three measured
    res = runner.invoke(app, ["tune", str(cfg), "--slo", "ttft_ms_p99<=200", "--resume", run_dir, "--verify",
                              "--json"])
    assert res.exit_code == 0, res.output
    out2 = json.loads(res.stdout)
    assert out2["points_measured"] == 2 and out2["verify_measured"] == 3
    assert out2["rows"][:2] == out["rows"]  # reused from the run dir, not measured again
    assert out2["found_grid_best"] is True and out2["grid_best"]["concurrency"] == 4
    assert sorted(r["concurrency"] for r in out2["rows"]) == [1, 2, 4, 8, 16]


def test_tune_bad_slo_exits_2_with_one_line(tmp_path, sim_url):
    # p42 is no percentile the points table has; the one line names the bad part and the allowed ones
    res = CliRunner().invoke(app, ["tune", "configs/sweeps/smoke.yaml", "--slo", "ttft_ms_p42<=5"])
    assert res.exit_code == 2
    assert "'p42'" in res.output and "p50, p90, p95, p99" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
