"""Cache hygiene: vLLM's dev-mode POST /reset_prefix_cache (retried while blocks are held), the server field
that chooses reset or keep, and the probe columns that record what happened."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from bench.config.sweep import ServerSpec
from bench.measure.prometheus import RESET_PREFIX_CACHE_PATH, reset_prefix_cache
from bench.sweep.probe import ServerProbe


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _run_against(answers: list[bool] | None, wait_s: float = 2.0) -> tuple[str | None, int]:
    """POST the reset at a stand-in that answers success values in turn (None: no such route, as without dev mode)."""
    calls = {"n": 0}

    async def reset(request: web.Request) -> web.Response:
        assert answers is not None
        ok = answers[min(calls["n"], len(answers) - 1)]
        calls["n"] += 1
        return web.json_response({"success": ok})

    async def main() -> str | None:
        app = web.Application()
        if answers is not None:
            app.router.add_post(RESET_PREFIX_CACHE_PATH, reset)
        runner, url = await _serve(app)
        try:
            async with aiohttp.ClientSession() as s:
                return await reset_prefix_cache(url + "/v1", s, wait_s=wait_s)  # an API root works too
        finally:
            await runner.cleanup()

    return asyncio.run(main()), calls["n"]


def test_reset_is_retried_while_the_server_holds_blocks():
    why, calls = _run_against([False, False, True])
    assert why is None and calls == 3


def test_reset_gives_up_with_a_reason():
    why, calls = _run_against([False], wait_s=0.3)
    assert why is not None and "still held KV blocks" in why and calls >= 2
    why, _ = _run_against(None)  # no dev mode: the route does not exist
    assert why == f"POST {RESET_PREFIX_CACHE_PATH} answered HTTP 404"


def test_the_policy_field_keeps_old_hashes_and_is_checked():
    old = ServerSpec(model="glm-4.5-tiny", enable_prefix_caching=True)
    assert "prefix_cache_between_points" not in old.model_dump()  # the default: server_hash as before the field
    keep = ServerSpec(model="glm-4.5-tiny", enable_prefix_caching=True, prefix_cache_between_points="keep")
    assert keep.server_hash != old.server_hash and keep.model_dump()["prefix_cache_between_points"] == "keep"
    assert old.resets_prefix_cache and not keep.resets_prefix_cache
    assert not ServerSpec(model="glm-4.5-tiny").resets_prefix_cache  # no cache, nothing to reset
    with pytest.raises(ValidationError, match="prefix_cache_between_points"):
        ServerSpec(model="glm-4.5-tiny", prefix_cache_between_points="flush")


def test_probe_columns_say_whether_the_cache_was_emptied():
    probe = ServerProbe(reset_cache=True)
    assert probe.columns()["prefix_cache_reset"] is None  # not tried (no server)
    probe.cache_reset = False
    assert probe.columns()["prefix_cache_reset"] is False
    probe.times = {"load_start": 1.0, "measure_start": 3.5, "measure_end": 9.0, "load_end": 9.25}
    assert probe.phase_columns() == {"warmup_wall_s": 2.5, "measure_wall_s": 5.5, "cooldown_wall_s": 0.25}
