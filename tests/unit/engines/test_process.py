"""bench.engines.process: the one start (own process group) and the one SIGTERM-grace-SIGKILL ladder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.engines.process import group_members, start_group, stop_child, stop_group

POLITE = "import sys, time; print('up', flush=True); time.sleep(60)"
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + POLITE


def _started(code: str, group: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", code]
    proc = start_group(cmd, stdout=subprocess.PIPE, text=True) if group else subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"  # its handler is in place
    proc.stdout.close()
    return proc


def test_start_group_makes_the_child_a_group_leader():
    proc = _started(POLITE, group=True)
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert group_members(proc.pid) == [proc.pid]
    finally:
        stop_group(proc.pid, grace_s=5.0, proc=proc)


def test_stop_group_sigterm_is_enough_for_a_polite_group():
    proc = _started(POLITE, group=True)
    t0 = time.monotonic()
    stop_group(proc.pid, grace_s=5.0, proc=proc)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - t0 < 4.0
    assert group_members(proc.pid) == []


def test_stop_group_sigkills_what_ignores_sigterm_after_the_grace():
    proc = _started(STUBBORN, group=True)
    t0 = time.monotonic()
    stop_group(proc.pid, grace_s=0.3, proc=proc)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - t0 >= 0.3
    assert group_members(proc.pid) == []


def test_stop_group_of_a_gone_group_is_a_no_op():
    proc = _started(POLITE, group=True)
    stop_group(proc.pid, grace_s=5.0, proc=proc)
    stop_group(proc.pid, grace_s=5.0, proc=proc)  # again: nothing left, no error


def test_stop_child_climbs_the_same_ladder_for_one_process():
    polite, stubborn = _started(POLITE, group=False), _started(STUBBORN, group=False)
    stop_child(polite, grace_s=5.0)
    stop_child(stubborn, grace_s=0.3)
    assert (polite.returncode, stubborn.returncode) == (-signal.SIGTERM, -signal.SIGKILL)
    stop_child(polite, grace_s=5.0)  # an exited child is only reaped


def test_the_guard_imports_nothing_of_the_harness_but_process():
    code = "import sys, bench.engines.guard; print(' '.join(sorted(m for m in sys.modules if m.startswith('bench'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert out.stdout.split() == ["bench", "bench.engines", "bench.engines.guard", "bench.engines.process"]


def test_ctrl_c_during_the_grace_still_kills_the_group_before_it_propagates(monkeypatch):
    """A Ctrl-C that lands while a stubborn group is in its 30 s grace (a sweep ending as the user presses it):
    the interrupt propagates at once, but only after the group got SIGKILL and is gone (a CI run left the
    server's processes alive when it skipped the rest of the ladder)."""
    import bench.engines.process as process

    proc = _started(STUBBORN, group=True)
    real_sleep, calls = time.sleep, []

    def interrupted_once(s: float) -> None:
        calls.append(s)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_sleep(s)

    monkeypatch.setattr(process.time, "sleep", interrupted_once)
    t0 = time.monotonic()
    try:
        stop_group(proc.pid, grace_s=30.0, proc=proc)
        raise AssertionError("the KeyboardInterrupt must propagate")
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(process.time, "sleep", real_sleep)
    assert time.monotonic() - t0 < 10.0  # not the 30 s grace
    assert group_members(proc.pid) == []
    proc.wait(5)
    assert proc.returncode == -signal.SIGKILL
