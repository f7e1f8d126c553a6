"""Test-wide settings: never touch a model hub; keep model dirs in a per-session cache. And the ONE real
vLLM server (CPU build is fine) of a test session, the tiny GLM-4.5 MoE twin, shared by the e2e tests and
the integration check of the scheduler simulation against the real engine (started only when asked for)."""

from __future__ import annotations

import os

# before anything imports transformers or vLLM
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

import importlib.util  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import pytest  # noqa: E402

from bench.config.sweep import EngineSpec, ServerSpec  # noqa: E402
from bench.engines.modeldir import materialize  # noqa: E402
from bench.engines.vllm_server import VllmServer, has_nvidia_gpu  # noqa: E402

TINY = "glm-4.5-tiny"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session")
def load_script():
    """scripts/<name>.py imported as a module (scripts/ is not a package), once per session and name."""
    def load(name: str) -> ModuleType:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    return load


def _group_members(pgid: int) -> list[int]:
    """Live members of a process group, by `ps` (independent of the code under test); zombies excluded."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, check=True).stdout
    pids = []
    for line in out.splitlines():
        pid, group, stat = line.split()[:3]
        if int(group) == pgid and not stat.startswith("Z"):
            pids.append(int(pid))
    return pids


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    pytest.importorskip("vllm")
    model_dir = materialize(TINY, None, tmp_path_factory.mktemp("models"))
    spec = ServerSpec(model=TINY, dtype="bfloat16", max_model_len=2048, max_num_seqs=32)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = VllmServer(spec, str(model_dir), EngineSpec(startup_timeout_s=600), log, on_cpu=not has_nvidia_gpu())
    server.start()
    pgid = server.proc.pid
    server.members_while_running = _group_members(pgid)
    yield server
    server.stop()
    left = _group_members(pgid)
    if left:  # do not leak processes into the next test run even when the assertion fails
        os.killpg(pgid, signal.SIGKILL)
    assert not left, f"server processes left after stop: {left}"
