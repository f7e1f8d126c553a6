"""Ways to run the simulated server: in a background thread (tests), in a child process
(capacity measurements, so it does not share the client's GIL), or in the foreground (`maas-bench sim`).

Split from `bench.sim.server`, which holds the aiohttp app itself; this module only owns sockets,
event loops and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from bench.engines.process import stop_child
from bench.sim.model import Pacer, SimConfig
from bench.sim.server import make_app

__all__ = ["run_sim_in_thread", "serve_forever", "start_sim_subprocess", "stop_sim_subprocess"]

HOST = "127.0.0.1"


async def _start(cfg: SimConfig, port: int, pacer: Pacer | None = None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(cfg, pacer), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    return runner, f"http://{HOST}:{sock.getsockname()[1]}"


def serve_forever(cfg: SimConfig, port: int = 8000, on_ready: Callable[[str], None] | None = None,
                  pacer: Pacer | None = None) -> None:
    """Run the sim in this thread until interrupted (Ctrl-C raises KeyboardInterrupt to the caller).

    on_ready receives the base URL (``http://127.0.0.1:PORT``, no ``/v1``) once the socket listens;
    port 0 picks a free port. `pacer` times the tokens instead of cfg (`sim --virtual`).
    """

    async def main() -> None:
        runner, url = await _start(cfg, port, pacer)
        try:
            if on_ready is not None:
                on_ready(url)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


@contextlib.contextmanager
def run_sim_in_thread(cfg: SimConfig | None = None, port: int = 0, pacer: Pacer | None = None) -> Iterator[str]:
    """Serve the sim from a background thread (own event loop); yields ``http://127.0.0.1:PORT``.

    For tests: the client under test keeps its own loop in the main thread. For capacity
    measurements use `start_sim_subprocess` so the server does not share the client's GIL.
    """
    cfg = cfg or SimConfig()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner, url = loop.run_until_complete(_start(cfg, port, pacer))
        except BaseException as e:  # surfaced to the caller below
            box["error"] = e
            ready.set()
            loop.close()
            return
        box["url"] = url
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=run, name="maas-bench-sim", daemon=True)
    thread.start()
    if not ready.wait(15):
        raise RuntimeError("simulated server did not start within 15 s")
    if "error" in box:
        raise box["error"]
    try:
        yield box["url"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def start_sim_subprocess(
    cfg: SimConfig | None = None, port: int = 0, timeout_s: float = 20.0, stderr: Any = None
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m bench.sim`` in a child process; returns (process, base URL).

    The child prints one line ``SIM_URL <url>`` once it listens; the caller owns the process
    and stops it with `stop_sim_subprocess`.
    """
    cfg = cfg or SimConfig()
    cmd = [sys.executable, "-m", "bench.sim", "--config-json", cfg.model_dump_json(), "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout_s):
            stop_sim_subprocess(proc)
            raise RuntimeError(f"simulated server subprocess did not report its URL within {timeout_s} s")
        line = proc.stdout.readline().strip()
    finally:
        sel.close()
    if not line.startswith("SIM_URL "):
        stop_sim_subprocess(proc)
        raise RuntimeError(f"simulated server subprocess failed to start (exit {proc.returncode}): {line!r}")
    return proc, line.split(" ", 1)[1]


def stop_sim_subprocess(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """Terminate a child started by `start_sim_subprocess` (kill if it does not exit)."""
    stop_child(proc, grace_s=timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()
