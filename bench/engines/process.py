"""Start a child in a process group of its own, and stop it: the one copy of "SIGTERM, grace, SIGKILL".

Why one home: a vLLM server (its engine-core and worker children included), the offline batch
child and the guard wrapper stopping its own group all need the same ladder: SIGTERM the group,
wait up to a grace period for every member to exit, SIGKILL what is left, and wait until no member
lives (SIGKILL is delivered asynchronously). A child kept in the caller's group (the simulated
server) climbs the same ladder signalling the one process.

Standard library only: `bench.engines.guard` imports it and must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

POLL_S = 0.1  # how often a wait re-reads /proc
KILL_WAIT_S = 10.0  # how long to wait for SIGKILLed members to be gone


def start_group(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Popen `cmd` as the leader of a new session (so of a new process group, pgid == its pid).

    Why a new session: a Ctrl-C in the terminal then reaches the harness only, which stops the
    group itself (cleanly, in order) instead of every process receiving SIGINT at once.
    """
    return subprocess.Popen(cmd, start_new_session=True, **popen)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # fields after the ")" that closes the command name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


def _ladder(send: Callable[[int], None], gone_within: Callable[[float], bool], grace_s: float,
            kill_wait_s: float) -> None:
    """SIGTERM, wait up to `grace_s`; SIGKILL, wait up to `kill_wait_s`; stop early once nothing is left.

    SIGCONT follows SIGTERM: a stopped process (SIGSTOP, a debugger; the health watch fails such a hung
    server's point) handles SIGTERM only once continued, and would otherwise sit out the whole grace."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        try:
            send(sig)
            if sig == signal.SIGTERM:
                send(signal.SIGCONT)
        except ProcessLookupError:
            return
        if gone_within(wait_s):
            return


def stop_group(pgid: int, grace_s: float, kill_wait_s: float = KILL_WAIT_S, *,
               proc: subprocess.Popen[Any] | None = None, spare: Collection[int] = ()) -> None:
    """SIGTERM process group `pgid`, SIGKILL what is left after `grace_s`, wait until no member lives.

    `grace_s=0` sends SIGKILL right after SIGTERM (a child with nothing to save). `proc`, the group's
    leader when this process started it, is reaped at the end (bounded by `kill_wait_s`). `spare` are
    members not waited for: the guard stops its own group from inside it (its final SIGKILL ends it).
    Safe to call for a group that is already gone. Reads /proc only, never Popen.poll(): the guard
    calls it from a signal handler that runs inside Popen.wait(), which holds the lock poll() needs.
    """

    def live() -> list[int]:
        return [p for p in group_members(pgid) if p not in spare]

    def gone_within(wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while live() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return not live()

    try:
        _ladder(lambda sig: os.killpg(pgid, sig), gone_within, grace_s, kill_wait_s)
    except KeyboardInterrupt:
        # Ctrl-C while the group is being stopped (a sweep's normal end, or an earlier Ctrl-C's unwinding): skip
        # the rest of the grace but still SIGKILL and wait, so the interrupt never leaves members behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        gone_within(kill_wait_s)
        raise
    if proc is not None:
        try:
            proc.wait(timeout=kill_wait_s)
        except subprocess.TimeoutExpired:
            pass


def stop_child(proc: subprocess.Popen[Any], grace_s: float, kill_wait_s: float | None = None) -> None:
    """The same ladder for one child that shares the caller's process group: SIGTERM, wait up to
    `grace_s`, SIGKILL, wait up to `kill_wait_s` (default: `grace_s`); raises TimeoutExpired if it
    outlives even that. A child that already exited is only reaped."""

    def gone_within(wait_s: float) -> bool:
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    if proc.poll() is not None:
        return
    _ladder(proc.send_signal, gone_within, grace_s, grace_s if kill_wait_s is None else kill_wait_s)
    if proc.returncode is None:
        proc.wait(0)  # alive even after SIGKILL: raise TimeoutExpired, as a plain wait() would
