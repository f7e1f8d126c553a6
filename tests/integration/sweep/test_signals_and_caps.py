"""Issue 25, item 5, with real processes: SIGINT and SIGTERM end a run within 2 s (asserted with a generous
10 s against a loaded machine; docs/reliability.md has the measured times), during open-loop sending, during a
server's start (a vLLM-kind start whose fake server ignores SIGTERM and never gets ready) and with a second
Ctrl-C; `maas-bench sim` stops on SIGTERM; and `request_rate: 100000` against the simulator ends by itself
with "the endpoint cannot sustain" instead of growing without bound.

Each process is started as a shell starts a background job (SIGINT ignored, `cmd &`), which is how the issue
found `sim` and `run` deaf to SIGTERM: the re-sent SIGINT was ignored too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bench.engines.process import group_members
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess

ROOT = Path(__file__).resolve().parents[3]
# The bar is 2 s (0.1-1.9 s measured, docs/reliability.md). What takes longer on a loaded box is CPU: the run
# unwinds (cancels, stops, writes its rows) on a share of 2 cores; at load average 26 (4 busy loops beside 5
# other jobs) the open-loop cases took 3.6-5.3 s. 10 s still fails a run that is deaf to the signal (30 s
# below), that waits out its 60 s point, or that gives a loading server the 15 s STOP_GRACE_S instead of the
# 0.5 s INTERRUPT_GRACE_S. (The server-start case took 14 s at load 26, beyond the 5x-slower box this allows.)
EXIT_LIMIT_S = 10.0


def _background(cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
    """Start `cmd` as `cmd &` in a script would: SIGINT ignored."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), **kw)  # type: ignore


def _time_to_exit(proc: subprocess.Popen[bytes], *sigs: signal.Signals) -> float:
    t0 = time.monotonic()
    for i, sig in enumerate(sigs):
        if i:
            time.sleep(0.05)
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running 30 s after {[s.name for s in sigs]}")
    took = time.monotonic() - t0
    print(f"{'+'.join(s.name for s in sigs)} -> exited after {took:.2f} s")
    return took


@pytest.fixture(scope="module")
def sim():
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=2, itl_ms=1), stderr=subprocess.DEVNULL)
    yield url
    stop_sim_subprocess(proc)


def _generated(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens"))


def _sweep_file(tmp_path: Path, url: str, load: dict[str, object], name: str = "sig") -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": name, "engine": {"kind": "openai", "base_url": url, "ignore_eos": True},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
        "load": {"warmup_requests": 0, **load}, "workloads": [{"name": "w", "input_len": 8, "output_len": 4}]}))
    return cfg


def _run_until_streaming(tmp_path: Path, url: str) -> subprocess.Popen[bytes]:
    """`maas-bench run` of open-loop points (300 req/s for 60 s each) once its requests reach the simulator."""
    cfg = _sweep_file(tmp_path, url, {"request_rate": [300, 301, 302], "duration_s": 60})
    before = _generated(url)
    proc = _background([sys.executable, "-m", "bench", "run", str(cfg), "--out", str(tmp_path / "out"), "--json"])
    deadline = time.monotonic() + 60
    while _generated(url) <= before + 50:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("sigs", [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)],
                         ids=["sigint", "sigterm", "sigint-twice"])
def test_a_signal_ends_an_open_loop_run_promptly(tmp_path, sim, sigs):
    proc = _run_until_streaming(tmp_path, sim)
    took = _time_to_exit(proc, *sigs)
    assert took < EXIT_LIMIT_S, took
    err = proc.stderr.read().decode() if proc.stderr else ""
    # 130: the run unwound (servers stopped, rows kept); a second Ctrl-C may instead end it by SIGINT itself (-2)
    assert proc.returncode == 130 or (len(sigs) == 2 and proc.returncode == -signal.SIGINT), (proc.returncode, err)
    assert "Traceback" not in err, err[-2000:]


def test_sim_stops_on_sigterm(tmp_path):
    proc = _background([sys.executable, "-m", "bench", "sim", "--port", "0"])
    assert proc.stdout is not None and "listening on" in proc.stdout.readline().decode()
    took = _time_to_exit(proc, signal.SIGTERM)
    assert took < EXIT_LIMIT_S and proc.returncode == 0, took


def test_an_unsustainable_rate_ends_the_point_with_the_reason(tmp_path, sim):
    cfg = _sweep_file(tmp_path, sim, {"request_rate": [100000], "num_requests": 10**6}, name="flood")
    res = subprocess.run([sys.executable, "-m", "bench", "run", str(cfg), "--out", str(tmp_path / "out"), "--json"],
                         capture_output=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1, res.stderr.decode()[-2000:]  # the point failed, the run ended by itself
    (row,) = json.loads(res.stdout)
    assert row["status"] == "failed"
    assert "the endpoint cannot sustain 100000 req/s (backlog" in row["error"], row["error"]


# A vLLM-kind start whose server never becomes ready and ignores SIGTERM (the worst case of a vLLM loading its
# model): the run is started through the real CLI and launcher path, only `launcher()` is replaced.
STUBBORN = textwrap.dedent('''
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn server loading", flush=True)
    time.sleep(600)
''')
HARNESS = textwrap.dedent('''
    import sys
    from bench.engines import vllm_server as vs
    server = sys.argv[1]
    vs.launcher = lambda: (sys.executable, server)
    from bench.cli.app import main
    sys.argv = ["maas-bench", "run", sys.argv[2], "--out", sys.argv[3]]
    main()
''')


def test_a_signal_during_a_server_start_ends_the_run_and_its_server(tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    (tmp_path / "harness.py").write_text(HARNESS)
    cfg = tmp_path / "vllm.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "start", "engine": {"kind": "vllm", "startup_timeout_s": 300},
        "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
        "load": {"concurrency": [1], "num_requests": 2, "warmup_requests": 0},
        "workloads": [{"name": "w", "input_len": 8, "output_len": 4}]}))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = _background([sys.executable, str(tmp_path / "harness.py"), str(tmp_path / "stubborn.py"), str(cfg),
                        str(out)], env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/logs/*.pid.json")) or "stubborn server loading" not in _log(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    group = json.loads(next(out.glob("*/logs/*.pid.json")).read_text())["pid"]
    took = _time_to_exit(proc, signal.SIGINT)
    assert took < EXIT_LIMIT_S, took
    assert group_members(group) == []  # the server that ignored SIGTERM was killed with its group


def _log(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in out.glob("*/logs/*.log"))
