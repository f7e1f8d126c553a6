"""`kill <pid>` (SIGTERM) of `maas-bench run` must stop it like Ctrl-C, also while a point's requests stream.

Found on the real engine (scripts/fault_table.py case d, 2026-11-27): a SIGTERM handler that raised
KeyboardInterrupt itself sometimes fired inside a uvloop protocol callback (a stream chunk arriving); uvloop
turns an exception there into that connection's loss, so the point recorded one failed request
("connection closed before the response ended: signal 15") and the sweep went on. The handler now re-sends
SIGINT, which asyncio's runner turns into a cancellation of the main task. This pins both behaviours with a
signal delivered inside `data_received`, in a subprocess (signal handlers belong to the main thread).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import asyncio, os, signal, sys
    import uvloop
    from bench.cli.app import _sigterm_like_sigint

    if sys.argv[1] == "raise":  # the old handler: KeyboardInterrupt raised in the signal handler itself
        def handler(*a):
            raise KeyboardInterrupt("signal 15")
        signal.signal(signal.SIGTERM, handler)
    else:
        _sigterm_like_sigint()
    lost = []

    class P(asyncio.Protocol):
        def data_received(self, data):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered inside an event-loop callback
        def connection_lost(self, exc):
            lost.append(repr(exc))

    async def main():
        try:
            srv = await asyncio.start_server(lambda r, w: w.write(b"x"), "127.0.0.1", 0)
            await asyncio.get_running_loop().create_connection(P, "127.0.0.1", srv.sockets[0].getsockname()[1])
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            print("main cancelled", flush=True)
            raise
        print("main finished", lost, flush=True)

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
''')


def _run(tmp_path: Path, mode: str) -> list[str]:
    (tmp_path / "s.py").write_text(SCRIPT)
    root = str(Path(__file__).resolve().parents[3])
    # SIGINT at its default, as under a terminal (a background shell's children inherit it ignored)
    out = subprocess.run([sys.executable, str(tmp_path / "s.py"), mode], capture_output=True, text=True, timeout=30,
                         cwd=root, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return out.stdout.split("\n")[:-1]


def test_sigterm_during_streaming_cancels_the_run(tmp_path):
    pytest.importorskip("uvloop")
    assert _run(tmp_path, "harness") == ["main cancelled", "KeyboardInterrupt"]


def test_a_keyboardinterrupt_raised_in_the_handler_is_swallowed_by_uvloop(tmp_path):
    # why the handler re-sends SIGINT: the run would go on, with the interrupt as a lost connection
    pytest.importorskip("uvloop")
    assert _run(tmp_path, "raise") == ["main finished [\"KeyboardInterrupt('signal 15')\"]"]
