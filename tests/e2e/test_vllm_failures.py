"""Failure isolation on the real vLLM engine (CPU build): one sweep, two groups, two failures.

Group 1 (bf16) starts a real server, which is SIGKILLed (API server process only, as a crash would)
once the point's first request is done: that point fails with 'server died', and no process of the
server's group is left afterwards. Group 2 (fp8) cannot start on CPU: its point fails with the engine's
reason. This test starts its own servers because it kills one (the session server is shared).
About one vLLM start plus one failed start (~40-70 s on 2 cores).
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from bench.config.sweep import Sweep
from bench.engines.vllm_server import has_nvidia_gpu
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = pytest.mark.e2e


def _group_members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, g, s in (line.split()[:3] for line in out.splitlines()) if int(g) == pgid
            and not s.startswith("Z")]


def test_server_killed_mid_point_and_fp8_start_failure(tmp_path):
    pytest.importorskip("vllm")
    if has_nvidia_gpu():
        pytest.skip("fp8 starts on GPUs; this checks the CPU build's failure path")
    sweep = Sweep(
        name="vllm-failures", engine={"kind": "vllm", "startup_timeout_s": 600},
        hardware={"gpu": "cpu-2core"},
        server={"model": "glm-4.5-tiny", "quantization": [None, "fp8"], "max_num_seqs": 8},
        load={"concurrency": [2], "num_requests": 12, "warmup_requests": 0, "timeout_s": 60},
        workloads=[{"name": "w", "input_len": 16, "output_len": 48}],
    )
    state: dict = {"pgid": None}

    def on_event(e):
        if e["type"] == "server_ready" and state["pgid"] is None:
            state["pgid"] = e["pid"]
        elif e["type"] == "request_done" and state.get("killed") is None and state["pgid"]:
            state["killed"] = True
            os.kill(state["pgid"], signal.SIGKILL)  # the API server only; its engine core is orphaned

    summary = run_sweep(sweep, out_root=tmp_path, progress=on_event)
    df = load_results(summary.run_dir)
    assert list(df["quantization"]) == ["none", "fp8"]
    killed, fp8 = df.iloc[0], df.iloc[1]
    assert killed["status"] == "failed" and killed["completed"] < 12
    assert "server died: killed by signal 9" in killed["error"]
    assert fp8["status"] == "failed" and fp8["error"].startswith("engine failed to start: vLLM exit code")
    # the root cause from the worker (CPU build: the fp8 quant kernel is missing), not vLLM's generic wrapper
    assert "fp8" in fp8["error"].lower() and "See root cause above" not in fp8["error"], fp8["error"]
    assert not _group_members(state["pgid"]), "the dead server's children must be cleaned up"
    assert summary.server_starts == 2 and summary.points_failed == 2
