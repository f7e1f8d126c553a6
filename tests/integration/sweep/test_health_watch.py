"""Health watch against the simulated server as a real child process: a server that is SIGSTOPped
(hung: its sockets stay open, nothing answers) or SIGKILLed mid-point fails that point within 15 s (6-8 s nominal)
with the reason, instead of at the point's timeout (60 s here), and the sweep goes on.

The vLLM-kind cases swap the runner's vLLM launcher for the sim child (as test_failures.py does),
so the session's own restart path runs; the openai-kind case watches only the endpoint's /health.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from bench.config.sweep import Sweep
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

TIMEOUT_S = 60  # each request's timeout: far above what the watch needs
# The watch fails a hung point after 3 failed /health probes 2 s apart, the last one timing out after 2 s:
# 6-8 s (7.0 s measured at load average 11 on the 2-core box). 15 s leaves each probe a late wake-up on a loaded
# machine and is still 4x below the 60 s request timeout, the path a point takes without the watch.
FAIL_WITHIN_S = 15


def _sweep(engine: dict) -> Sweep:
    # 100 tokens at 10 ms: ~1 s a request, 8 requests at concurrency 2 -> ~4 s a point when healthy
    return Sweep(
        name="health", engine=engine, hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
        server={"model": "glm-4.5-tiny"},
        load={"concurrency": [2, 4], "num_requests": 8, "warmup_requests": 0, "timeout_s": TIMEOUT_S},
        workloads=[{"name": "w", "input_len": 8, "output_len": 100}],
    )


def _fault_on_first_request(pid_of, sig: int, after_fault=None):
    """A progress callback: send `sig` to the server once point 0 has one request done; time the point."""
    state: dict = {"fault_at": None, "failed_after_s": None, "events": []}

    def on_event(e):
        state["events"].append(e)
        if e["type"] == "request_done" and state["fault_at"] is None:
            state["pid"] = pid = pid_of()
            state["fault_at"] = time.monotonic()
            os.kill(pid, sig)
        elif e["type"] == "point_done" and e["row"]["point_index"] == 0:
            state["failed_after_s"] = time.monotonic() - state["fault_at"]
            if after_fault is not None:
                after_fault(state["pid"])

    return state, on_event


def test_a_sigstopped_server_fails_its_point_by_health_then_restarts(tmp_path, sim_servers):
    state, on_event = _fault_on_first_request(lambda: sim_servers[0].proc.pid, signal.SIGSTOP)
    summary = run_sweep(_sweep({"kind": "vllm"}), out_root=tmp_path, progress=on_event)
    df = load_results(summary.run_dir)
    hung = df.iloc[0]
    assert hung["status"] == "failed" and hung["completed"] < 8
    assert hung["error"].startswith("server stopped answering /health for ")
    assert "no answer within 2 s" in hung["error"]
    assert state["failed_after_s"] < FAIL_WITHIN_S
    print(f"SIGSTOP -> point failed after {state['failed_after_s']:.1f} s")
    # the hung server still 'runs': the session restarts it anyway, and the next point is measured
    assert df.iloc[1]["status"] == "ok" and df.iloc[1]["completed"] == 8
    ready = [e for e in state["events"] if e["type"] == "server_ready"]
    assert [e["restart"] for e in ready] == [False, True]
    assert summary.points_failed == 1
    assert all(not s.alive() for s in sim_servers)  # the stopped one was stopped for good too


def test_a_sigkilled_server_fails_its_point_quickly_with_died(tmp_path, sim_servers):
    state, on_event = _fault_on_first_request(lambda: sim_servers[0].proc.pid, signal.SIGKILL)
    summary = run_sweep(_sweep({"kind": "vllm"}), out_root=tmp_path, progress=on_event)
    df = load_results(summary.run_dir)
    killed = df.iloc[0]
    assert killed["status"] == "failed" and killed["completed"] < 8
    assert "server died: killed by signal 9 (SIGKILL)" in killed["error"]
    assert state["failed_after_s"] < FAIL_WITHIN_S
    print(f"SIGKILL -> point failed after {state['failed_after_s']:.1f} s")
    assert df.iloc[1]["status"] == "ok"


def test_an_endpoint_that_hangs_fails_its_point_by_health_and_the_sweep_goes_on(tmp_path):
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=20, itl_ms=10), stderr=subprocess.DEVNULL)
    try:
        # the endpoint is not ours to restart: it is continued once its point has failed
        state, on_event = _fault_on_first_request(lambda: proc.pid, signal.SIGSTOP,
                                                  after_fault=lambda pid: os.kill(pid, signal.SIGCONT))
        summary = run_sweep(_sweep({"kind": "openai", "base_url": url, "ignore_eos": True}), out_root=tmp_path,
                            progress=on_event)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop_sim_subprocess(proc)
    df = load_results(summary.run_dir)
    assert df.iloc[0]["status"] == "failed"
    assert df.iloc[0]["error"].startswith("server stopped answering /health for ")
    assert state["failed_after_s"] < FAIL_WITHIN_S
    print(f"SIGSTOP (openai endpoint) -> point failed after {state['failed_after_s']:.1f} s")
    assert df.iloc[1]["status"] == "ok" and df.iloc[1]["completed"] == 8
