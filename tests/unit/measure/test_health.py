"""bench.measure.health: the watch that fails a point when its server dies or stops answering /health."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from bench.measure.health import HealthWatch, ServerDown, watch_load


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _fast(**kw) -> HealthWatch:
    return HealthWatch(interval_s=0.05, timeout_s=0.2, alive_interval_s=0.02, **kw)


def test_a_dead_process_fails_the_load_with_its_reason_and_cancels_it() -> None:
    calls = {"n": 0}
    cancelled = asyncio.Event()

    def alive() -> bool:
        calls["n"] += 1
        return calls["n"] < 3

    async def load() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    async def main() -> None:
        watch = _fast(alive=alive, died_reason=lambda: "killed by signal 9 (SIGKILL)")
        t0 = time.monotonic()
        with pytest.raises(ServerDown) as ei:
            await watch_load(load(), watch)
        assert time.monotonic() - t0 < 5  # the liveness check, not the load's own end (loaded CI: generous)
        assert str(ei.value) == "server died: killed by signal 9 (SIGKILL)" == watch.reason
        assert cancelled.is_set()  # the in-flight load was cancelled, not left running

    asyncio.run(main())


def test_a_load_that_ends_first_returns_its_result_and_stops_the_watch() -> None:
    async def main() -> None:
        watch = _fast(alive=lambda: True)
        assert await watch_load(asyncio.sleep(0.1, result=7), watch) == 7
        assert watch.reason is None

    asyncio.run(main())


def test_no_watch_or_nothing_to_watch_just_awaits_the_load() -> None:
    async def main() -> None:
        assert await watch_load(asyncio.sleep(0, result=1), None) == 1
        assert await watch_load(asyncio.sleep(0, result=2), HealthWatch()) == 2

    asyncio.run(main())


def test_an_unreachable_endpoint_fails_after_consecutive_failed_probes() -> None:
    async def main() -> None:
        watch = _fast(base_url=f"http://127.0.0.1:{_closed_port()}")
        with pytest.raises(ServerDown) as ei:
            await watch_load(asyncio.sleep(30), watch)
        assert str(ei.value).startswith("server stopped answering /health for ")
        assert "Connect" in str(ei.value)  # the last probe's error is named
        assert watch.probes == 3

    asyncio.run(main())


def test_a_hung_health_endpoint_fails_and_an_answering_one_does_not() -> None:
    hang = {"on": False}
    release = asyncio.Event()  # lets the hung handlers end before the server's cleanup waits for them

    async def health(request: web.Request) -> web.Response:
        if hang["on"]:
            await release.wait()
        return web.Response(status=200)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/health", health)
        runner, url = await _serve(app)
        try:
            watch = _fast(base_url=url + "/v1")  # an API root: /health is probed at the server root
            assert await watch_load(asyncio.sleep(1.5, result="ok"), watch) == "ok"  # room for >= 3 probes
            assert watch.probes >= 3 and watch.reason is None
            hang["on"] = True
            watch = _fast(base_url=url)
            with pytest.raises(ServerDown) as ei:
                await watch_load(asyncio.sleep(30), watch)
            assert "server stopped answering /health for" in str(ei.value)
            assert "no answer within 0.2 s" in str(ei.value)
        finally:
            release.set()
            await runner.cleanup()

    asyncio.run(main())


def test_an_endpoint_without_health_still_answers_but_a_5xx_does_not() -> None:
    status = {"code": 404}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=status["code"])

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/health", health)
        runner, url = await _serve(app)
        try:
            watch = _fast(base_url=url)  # a provider API without /health (404) is alive
            assert await watch_load(asyncio.sleep(0.4, result="ok"), watch) == "ok"
            status["code"] = 503  # vLLM's /health once its engine is dead
            with pytest.raises(ServerDown, match=r"stopped answering /health .*\(HTTP 503\)"):
                await watch_load(asyncio.sleep(30), _fast(base_url=url))
        finally:
            await runner.cleanup()

    asyncio.run(main())
