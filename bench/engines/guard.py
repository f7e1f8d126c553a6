"""A tiny wrapper that ties a server's whole process group to the harness's life.

Why: the vLLM server runs in its own session (so a Ctrl-C in the terminal does not hit it before
the harness has stopped it cleanly), which also means nothing kills it when the harness dies by
SIGKILL or an unhandled SIGTERM: it would keep answering /health and keep holding the GPU. Linux's
parent-death signal (prctl PR_SET_PDEATHSIG) fixes that, but only for the direct child; vLLM's
engine-core and worker processes are grandchildren. So the harness starts this wrapper (leader of
the new process group), which asks for SIGTERM on the harness's death and, on SIGTERM (from the
harness's `stop()` or from the kernel when the harness dies), stops the whole group: SIGTERM, a
grace period, then SIGKILL. When the server exits on its own the wrapper exits the same way (the
same code, or killed by the same signal), so the harness reads the server's real exit status.

Usage: python -m bench.engines.guard <parent_pid> <grace_s> <command...>. Imports only the
standard library and `bench.engines.process` (standard library only itself): it must start in
milliseconds and must not import vLLM or the rest of the harness.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from bench.engines.process import group_members, stop_group

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stop_group(grace_s: float, child: subprocess.Popen[bytes] | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group-wide SIGTERM below reaches us too
    # Not child.poll(): this runs inside child.wait(), which holds the lock poll() needs; stop_group
    # reads /proc. The others get `grace_s`; a SIGKILL of the group then ends this wrapper as well.
    stop_group(os.getpgid(0), grace_s, spare=(os.getpid(),))
    os.killpg(0, signal.SIGKILL)  # the rest of the group (engine core, workers), and this wrapper


def _others() -> list[int]:
    """Live (non-zombie) members of this process group other than this wrapper, read from /proc."""
    me = os.getpid()
    return [pid for pid in group_members(os.getpgid(0)) if pid != me]


def _kill_rest_of_group() -> None:
    """SIGKILL every other live member of this process group, sparing this wrapper."""
    for pid in _others():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


def main(argv: list[str]) -> int:
    parent, grace_s, cmd = int(argv[0]), float(argv[1]), argv[2:]
    set_parent_death_signal(signal.SIGTERM)
    child: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, lambda *_: _stop_group(grace_s, child))
    if os.getppid() != parent:  # the harness died before prctl took effect
        _stop_group(0.0, None)
    # inherits stdout/stderr (the server log) and this process group; dies with this wrapper too
    child = subprocess.Popen(cmd, preexec_fn=set_parent_death_signal)  # noqa: PLW1509 - prctl only
    code = child.wait()
    _kill_rest_of_group()  # engine-core / worker processes the server left behind
    if code < 0:  # killed by a signal: die by the same one, so the harness sees "killed by signal N"
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # their disposition cannot be set (EINVAL)
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
