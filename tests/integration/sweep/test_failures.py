"""Failure isolation against the simulated server: request timeouts, a server killed during a point,
an engine that cannot start. Each failure becomes a row with its status and reason; the sweep goes on.

The server-death and start-failure cases swap the runner's vLLM launcher for a launcher of the sim
as a real child process (same start/stop/alive interface), so the runner's own code paths run
against a real process that is really SIGKILLed. The real-vLLM versions are in
tests/e2e/test_vllm_failures.py.
"""

from __future__ import annotations

import os
import signal
import time

from bench.config.sweep import Sweep
from bench.sim import SimConfig, run_sim_in_thread
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results


def test_timeouts_fail_the_point_and_the_sweep_goes_on(tmp_path):
    # sim: TTFT 20 ms, 5 ms per token. 'long' needs 20 + 399*5 = ~2015 ms per request > timeout 0.5 s;
    # 'short' needs 20 + 3*5 = 35 ms. Four requests at concurrency 2 -> the long point takes ~2 x 0.5 s.
    with run_sim_in_thread(SimConfig(ttft_ms=20, itl_ms=5)) as url:
        sweep = Sweep(
            name="timeouts", engine={"kind": "openai", "base_url": url, "ignore_eos": True},
            hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, server={"model": "glm-4.5-tiny"},
            load={"concurrency": [2], "num_requests": 4, "warmup_requests": 0, "timeout_s": 0.5},
            workloads=[{"name": "long", "input_len": 8, "output_len": 400},
                       {"name": "short", "input_len": 8, "output_len": 4}],
        )
        t0 = time.monotonic()
        summary = run_sweep(sweep, out_root=tmp_path)
        wall = time.monotonic() - t0
    df = load_results(summary.run_dir).set_index("workload")
    assert df.loc["long", "status"] == "failed"
    assert df.loc["long", "completed"] == 0
    assert "4 of 4 requests failed" in df.loc["long", "error"] and "timeout after 0.5 s" in df.loc["long", "error"]
    assert df.loc["short", "status"] == "ok" and df.loc["short", "completed"] == 4
    assert summary.points_failed == 1 and summary.points_run == 2
    assert wall < 10  # the timeout bounds the point: no request waited for its 2 s stream


def test_server_killed_during_a_point_fails_it_then_restarts_for_the_next(tmp_path, sim_servers):
    sweep = Sweep(
        name="kill", engine={"kind": "vllm"}, hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
        server={"model": "glm-4.5-tiny", "quantization": [None, "fp8"], "max_num_seqs": [8, 16]},
        exclude=[{"quantization": "fp8", "max_num_seqs": 16}],
        load={"concurrency": [2, 4], "num_requests": 8, "warmup_requests": 0, "timeout_s": 5},
        workloads=[{"name": "w", "input_len": 8, "output_len": 20}],
    )
    events: list[dict] = []
    state = {"killed_pid": None}

    def on_event(e):
        events.append(e)
        # SIGKILL the first server as soon as its first point has one request done
        if e["type"] == "request_done" and state["killed_pid"] is None:
            state["killed_pid"] = pid = sim_servers[0].proc.pid
            os.kill(pid, signal.SIGKILL)

    summary = run_sweep(sweep, out_root=tmp_path, progress=on_event)
    df = load_results(summary.run_dir)
    # groups: (none, 8) [killed during c=2, restarted for c=4], (none, 16) fresh, (fp8, 8) cannot start
    assert list(df["quantization"]) == ["none", "none", "none", "none", "fp8", "fp8"]
    assert list(df["max_num_seqs"]) == [8, 8, 16, 16, 8, 8]
    killed = df.iloc[0]
    assert killed["status"] == "failed" and killed["completed"] < 8
    assert "server died: killed by signal 9 (SIGKILL)" in killed["error"]
    assert list(df["status"].iloc[1:4]) == ["ok", "ok", "ok"]
    assert (df["error"].iloc[4:] == "engine failed to start: vLLM exited with code 1 during start: "
            "fp8 quantization is not supported here").all()
    ready = [e for e in events if e["type"] == "server_ready"]
    assert [e["restart"] for e in ready] == [False, True, False]
    assert len({e["pid"] for e in ready}) == 3 and ready[0]["pid"] == state["killed_pid"]
    # starts: first, restart, second group, and the failed fp8 attempt
    assert summary.server_starts == 4 and summary.points_failed == 3
    assert all(not s.alive() for s in sim_servers)  # every server was stopped at the end of its group
