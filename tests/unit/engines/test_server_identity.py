"""Issue 25, item 3: a server start is accepted only when the server answering is the one started.

A decoy that already answered /health (and even /v1/models with the right name) on the chosen port used to be
measured as the started vLLM. These tests start fake servers through the real launcher path
(VllmServer.start -> spawn_guarded -> bench.engines.guard; only `launcher()` is replaced, as in
test_server_lifecycle.py) next to a decoy process that is not in the started group. Also: --resume's
stop_stale kills only a process group it can prove it started (start time, boot, command, session).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.config.sweep import EngineSpec, ServerSpec
from bench.engines import identity
from bench.engines import vllm_server as vs
from bench.engines.base import EngineStartError

# An HTTP server that answers like vLLM: 200 on /health, /v1/models naming MODEL. REUSEPORT=1 binds with
# SO_REUSEPORT (vLLM may, and so may a decoy beside it); LOADING=1 never binds (a vLLM still loading).
SERVER = textwrap.dedent('''
    import http.server, json, os, socket, sys, time
    port = int(sys.argv[sys.argv.index("--port") + 1])
    if os.environ.get("LOADING") == "1":
        time.sleep(600)
    model = os.environ.get("MODEL", "maas-bench-model")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
            if self.path == "/v1/models":
                self.wfile.write(json.dumps({"object": "list", "data": [{"id": model}]}).encode())
        def log_message(self, *a): pass
    class S(http.server.HTTPServer):
        def server_bind(self):
            if os.environ.get("REUSEPORT") == "1":
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()
    srv = S(("127.0.0.1", port), H)
    print("LISTENING", flush=True)
    srv.serve_forever()
''')


@pytest.fixture
def server_script(tmp_path, monkeypatch):
    path = tmp_path / "server.py"
    path.write_text(SERVER)
    monkeypatch.setattr(vs, "launcher", lambda: (sys.executable, str(path)))
    return path


def _decoy(script: Path, port: int, **env: str) -> subprocess.Popen[str]:
    """A process outside any group the harness starts, answering on `port` first."""
    p = subprocess.Popen([sys.executable, str(script), "--port", str(port)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **env})
    assert p.stdout is not None and p.stdout.readline().strip() == "LISTENING"
    return p


def _server(tmp_path: Path, port: int, timeout_s: float = 20.0) -> vs.VllmServer:
    return vs.VllmServer(ServerSpec(model="m"), "m", EngineSpec(startup_timeout_s=timeout_s),
                         tmp_path / "logs" / "server-x.log", on_cpu=True, port=port)


def _stop(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait(10)


def test_a_decoy_answering_health_on_the_port_is_not_accepted(tmp_path, server_script, monkeypatch):
    port = vs.free_port()
    decoy = _decoy(server_script, port)  # answers /health 200 and /v1/models with the expected name
    try:
        monkeypatch.setenv("LOADING", "1")  # the started server is still loading: only the decoy answers
        srv = _server(tmp_path, port, timeout_s=4)
        with pytest.raises(EngineStartError) as err:
            srv.start()
        msg = str(err.value)
        assert f"port {port} is held by another process, pid {decoy.pid}" in msg, msg
        assert "not by the server this run started" in msg and "answers /health" in msg
        assert srv.proc is None and decoy.poll() is None  # our group was stopped; the decoy was not touched
    finally:
        _stop(decoy)


def test_a_decoy_sharing_the_port_with_so_reuseport_is_found(tmp_path, server_script, monkeypatch):
    port = vs.free_port()
    decoy = _decoy(server_script, port, REUSEPORT="1")
    try:
        monkeypatch.setenv("REUSEPORT", "1")  # ours binds too, and the kernel splits connections between them
        srv = _server(tmp_path, port, timeout_s=6)
        with pytest.raises(EngineStartError, match=f"held by another process, pid {decoy.pid}"):
            srv.start()
    finally:
        _stop(decoy)


def test_our_own_server_serving_another_name_fails_with_the_names(tmp_path, server_script, monkeypatch):
    monkeypatch.setenv("MODEL", "someone-else")
    srv = _server(tmp_path, vs.free_port())
    with pytest.raises(EngineStartError) as err:
        srv.start()
    assert "does not serve model 'maas-bench-model'" in str(err.value)
    assert "lists 'someone-else'" in str(err.value)


def test_our_own_server_is_accepted_and_its_record_proves_it(tmp_path, server_script):
    srv = _server(tmp_path, vs.free_port())
    srv.start()
    try:
        assert srv.proc is not None
        assert identity.port_owner_problem(srv.port, vs.group_members(srv.proc.pid)) is None
        rec = json.loads(vs.pid_file(srv.log_path).read_text())
        assert rec["pid"] == srv.proc.pid and rec["start_ticks"] > 0 and rec["boot_id"]
        assert identity.proven_own_group(rec) == srv.proc.pid
    finally:
        srv.stop()


def test_listening_inodes_are_read_from_proc_net_tcp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        inode = os.fstat(s.fileno()).st_ino  # a socket's inode is the one /proc/net/tcp lists
        assert identity.listening_inodes(port) == [inode]
        assert inode in identity.socket_inodes_of(os.getpid())
        assert identity.port_owner_problem(port, [os.getpid()]) is None
        assert "held by another process, pid" in (identity.port_owner_problem(port, [1]) or "")
    assert identity.port_owner_problem(port, [os.getpid()]) == f"nothing listens on port {port}"


def _guarded_sleeper(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "logs").mkdir(exist_ok=True)
    with open(tmp_path / "logs" / "server-y.log", "ab") as log:
        proc = vs.spawn_guarded([sys.executable, "-c", "import time; time.sleep(600)"], log, dict(os.environ))
    f = tmp_path / "logs" / "server-y.pid.json"
    vs.write_pid_file(f, proc)
    return proc, f


def test_resume_does_not_kill_a_group_whose_start_time_differs(tmp_path):
    # the same pid and command line, but not the process recorded (a reused pid running the same command)
    proc, f = _guarded_sleeper(tmp_path)
    try:
        rec = json.loads(f.read_text())
        f.write_text(json.dumps({**rec, "start_ticks": rec["start_ticks"] - 1}))
        assert vs.stop_stale_servers(tmp_path / "logs") == []
        time.sleep(0.3)
        assert proc.poll() is None and vs.group_members(proc.pid)
        vs.write_pid_file(f, proc)  # the true record: now it is proven, and stopped
        assert vs.stop_stale_servers(tmp_path / "logs") == [proc.pid]
        proc.wait(10)
        assert vs.group_members(proc.pid) == []
    finally:
        vs.stop_group(proc.pid, 0.0, proc=proc)


def test_resume_does_not_kill_a_process_that_leads_no_session_of_its_own(tmp_path):
    # a record with every fingerprint right, but of a process in this test's own group: killing "its group"
    # would kill pytest. Only a session leader the harness started (pgid == sid == pid) may be stopped.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        fp = identity.process_fingerprint(child.pid)
        assert fp is not None
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs" / "server-z.pid.json").write_text(json.dumps({"pid": child.pid, **fp}))
        assert vs.stop_stale_servers(tmp_path / "logs") == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(10)


def test_a_crafted_or_old_record_is_never_acted_on(tmp_path):
    (tmp_path / "logs").mkdir()
    me = identity.process_fingerprint(os.getpid())
    assert me is not None
    (tmp_path / "logs" / "a.pid.json").write_text(json.dumps({"pid": os.getpid(), "command": me["command"]}))
    (tmp_path / "logs" / "b.pid.json").write_text("not json")
    (tmp_path / "logs" / "c.pid.json").write_text(json.dumps({"pid": 1, **me}))
    assert vs.stop_stale_servers(tmp_path / "logs") == []
    assert list((tmp_path / "logs").glob("*.pid.json")) == []
