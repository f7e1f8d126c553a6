"""Server health watch: a dead or hung server fails its point within seconds, not at its timeout.

Without it a server that dies or stops answering is noticed only when the point's requests time
out (the whole `timeout_s` for a server that hangs with connections open). `watch_load` runs the
point's load beside a watcher task; the watcher checks two things and, on the first failure, sets
its `reason`, cancels the load (the in-flight requests with it) and `watch_load` raises
`ServerDown` carrying that reason:

- the process (engines that start one): `alive()` every ALIVE_INTERVAL_S; when it turns False the
  reason is "server died: <died_reason()>" (the engine's exit description, read from its log);
- the HTTP endpoint (every HTTP engine): GET <base_url>/health every HEALTH_INTERVAL_S, each with a
  HEALTH_TIMEOUT_S timeout; HEALTH_FAILURES consecutive failures give "server stopped answering
  /health for N s (<last error>)", N counted from the last answer (or from the watch's start).

What counts as an answer: any HTTP response below 500. An endpoint that does not serve /health (a
provider API: 404, or 401 without the key) still answers; only no response at all (timeout,
connection refused/reset) or a 5xx (vLLM's /health returns 503 once its engine is dead) is a failure.
A SIGSTOPped or deadlocked server is therefore found within about HEALTH_FAILURES x HEALTH_INTERVAL_S
(+ one interval of phase): under 10 s with the defaults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

HEALTH_INTERVAL_S = 2.0  # between the starts of two /health probes
HEALTH_TIMEOUT_S = 2.0  # a probe with no answer within this fails
HEALTH_FAILURES = 3  # consecutive failed probes that fail the point
ALIVE_INTERVAL_S = 0.5  # between two process liveness checks (a cheap waitpid)


class ServerDown(RuntimeError):
    """The health watch failed a point: the server died or stopped answering. `str()` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class HealthWatch:
    """What to watch for one point: the process check and/or the HTTP endpoint (None: not watched)."""

    base_url: str | None = None
    alive: Callable[[], bool] | None = None
    died_reason: Callable[[], str] | None = None  # why the process died (called once it has)
    interval_s: float = HEALTH_INTERVAL_S
    timeout_s: float = HEALTH_TIMEOUT_S
    failures: int = HEALTH_FAILURES
    alive_interval_s: float = ALIVE_INTERVAL_S
    ca_file: str | None = None
    verify_tls: bool = True
    reason: str | None = None  # set when the watch failed the point
    failed_after_s: float | None = None  # seconds from the watch's start to the failure
    probes: int = 0  # /health probes sent (for tests and diagnostics)

    @property
    def active(self) -> bool:
        return self.base_url is not None or self.alive is not None

    def _died(self) -> str:
        detail = "the process exited"
        if self.died_reason is not None:
            try:
                detail = self.died_reason()
            except Exception as e:  # reading the log must not hide the death itself
                detail = f"the process exited (reason unreadable: {type(e).__name__}: {e})"
        return f"server died: {detail}"

    async def _watch_process(self) -> str:
        assert self.alive is not None
        while True:
            await asyncio.sleep(self.alive_interval_s)
            if not self.alive():
                return self._died()

    async def _watch_http(self) -> str:
        import aiohttp

        assert self.base_url is not None
        root = self.base_url.rstrip("/")
        if root.endswith("/v1"):  # an API root: /health is at the server root (as /metrics is)
            root = root[: -len("/v1")]
        url = root + "/health"
        ssl: Any = None
        if not self.verify_tls:
            ssl = False
        elif self.ca_file:
            import ssl as ssl_mod

            ssl = ssl_mod.create_default_context(cafile=self.ca_file)
        last_ok = time.monotonic()
        failed = 0
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        # a connection per probe: a pooled keep-alive connection to a dead peer would only fail later
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as http:
            while True:
                t0 = time.monotonic()
                error = await self._probe(http, url, ssl)
                self.probes += 1
                if error is None:
                    failed, last_ok = 0, time.monotonic()
                else:
                    failed += 1
                    if failed >= self.failures:
                        # the alive check may have been about to see the death: prefer its reason
                        if self.alive is not None and not self.alive():
                            return self._died()
                        silent = time.monotonic() - last_ok
                        return f"server stopped answering /health for {silent:.0f} s ({error})"
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - t0)))

    async def _probe(self, http: Any, url: str, ssl: Any) -> str | None:
        """None when the server answered, else why not."""
        try:
            async with http.get(url, ssl=ssl) as resp:
                if resp.status >= 500:
                    return f"HTTP {resp.status}"
                return None
        except asyncio.TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as e:  # connection refused/reset, DNS, TLS: the endpoint does not answer
            return f"{type(e).__name__}: {e}"

    async def run(self) -> str:
        """Watch until the server fails; returns the reason (never returns while the server is fine)."""
        start = time.monotonic()
        checks = []
        if self.alive is not None:
            checks.append(asyncio.ensure_future(self._watch_process()))
        if self.base_url is not None:
            checks.append(asyncio.ensure_future(self._watch_http()))
        if not checks:
            await asyncio.Event().wait()  # nothing to watch: wait to be cancelled
        try:
            done, _ = await asyncio.wait(checks, return_when=asyncio.FIRST_COMPLETED)
            first = next(iter(done))
            self.reason = first.result()
            self.failed_after_s = time.monotonic() - start
            return self.reason
        finally:
            for c in checks:
                c.cancel()
            await asyncio.gather(*checks, return_exceptions=True)


async def watch_load(load: Awaitable[T], watch: HealthWatch | None) -> T:
    """Await `load` while `watch` watches the server; a failed watch cancels the load and raises ServerDown."""
    if watch is None or not watch.active:
        return await load
    load_task = asyncio.ensure_future(load)
    watch_task = asyncio.ensure_future(watch.run())
    try:
        await asyncio.wait([load_task, watch_task], return_when=asyncio.FIRST_COMPLETED)
        if load_task.done():
            return load_task.result()
        load_task.cancel()  # the server failed: cancel the point's in-flight requests
        await asyncio.gather(load_task, return_exceptions=True)
        raise ServerDown(watch_task.result())
    finally:
        for t in (load_task, watch_task):
            if not t.done():
                t.cancel()
        await asyncio.gather(load_task, watch_task, return_exceptions=True)
