"""The sim as a real child process standing in for vLLM's server: the runner's own start/stop/alive/restart
code runs against a process that is really SIGKILLed or SIGSTOPped (test_failures.py, test_health_watch.py);
the real-vLLM versions are in tests/e2e/test_vllm_failures.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from bench.engines.vllm_server import EngineStartError
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess


class SimProcessServer:
    """Stands in for VllmServer: runs the sim as a child process; 'fp8' refuses to start like vLLM on CPU."""

    instances: list[SimProcessServer] = []

    def __init__(self, spec, model_path, engine, log_path, on_cpu=True):
        self.spec, self.log_path = spec, log_path
        self.proc = None
        self.base_url = ""
        self.startup_s = None
        SimProcessServer.instances.append(self)

    def start(self):
        if self.spec.quantization == "fp8":
            raise EngineStartError("vLLM exited with code 1 during start: fp8 quantization is not supported here")
        t0 = time.monotonic()
        # a SIGCONTed sim prints tracebacks about the connections closed while it was stopped: not ours to read
        self.proc, self.base_url = start_sim_subprocess(SimConfig(ttft_ms=20, itl_ms=10), stderr=subprocess.DEVNULL)
        self.startup_s = time.monotonic() - t0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def failure_reason(self):
        return "(sim child has no log)"

    def stop(self, grace_s=15.0):  # VllmServer.stop's signature (a Ctrl-C passes a short grace)
        if self.proc is not None:
            stop_sim_subprocess(self.proc)
            self.proc = None


@pytest.fixture
def sim_servers(monkeypatch):
    import bench.engines.vllm_server

    SimProcessServer.instances = []
    monkeypatch.setattr(bench.engines.vllm_server, "VllmServer", SimProcessServer)
    yield SimProcessServer.instances
    for s in SimProcessServer.instances:
        if s.proc is not None and s.proc.poll() is None:
            os.kill(s.proc.pid, signal.SIGCONT)  # a test may leave it stopped
        s.stop()
