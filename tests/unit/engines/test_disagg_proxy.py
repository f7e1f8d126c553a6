"""The P/D proxy (bench.engines.disagg_proxy) against recording stand-in servers: the prefill server gets the
request with max_tokens=1, no stream and vLLM's do_remote_decode flag; the decode server gets the request as
the client sent it plus the prefill answer's kv_transfer_params, and its stream reaches the client byte for
byte; an engine's error comes back as it was; the aggregated baseline sends each request whole, in turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.engines.disagg_proxy import Pools, make_app, parse_args

STREAM = [b'data: {"choices":[{"text":"a"}]}\n\n', b'data: {"choices":[{"text":"b"}]}\n\n', b"data: [DONE]\n\n"]
# the decode server's usage event: it counts the 1024 prompt tokens whose KV it received as cached
USAGE = (b'data: {"choices":[],"usage":{"prompt_tokens":1026,"completion_tokens":2,'
         b'"prompt_tokens_details":{"cached_tokens":1024}}}\n\n')
CLIENT_BODY: dict[str, Any] = {"model": "m", "prompt": "hello", "max_tokens": 64, "stream": True,
                               "stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 64}


def _backend(name: str, seen: list[tuple[str, dict[str, Any]]], prefill_status: int = 200) -> web.Application:
    """A stand-in server: answers non-streamed requests with kv_transfer_params naming itself, streams STREAM."""

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append((name, body))
        if not body.get("stream"):
            if prefill_status != 200:
                return web.json_response({"error": {"message": "prompt too long"}}, status=prefill_status)
            return web.json_response({"choices": [{"text": "x"}], "kv_transfer_params": {"remote_engine_id": name},
                                      "usage": {"prompt_tokens_details": {"cached_tokens": 0}}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = STREAM if not body.get("with_usage") else [*STREAM[:2], USAGE[:30], USAGE[30:], STREAM[2]]
        for chunk in chunks:  # the usage event split across two writes, as a network read may split it
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def reset(request: web.Request) -> web.Response:
        seen.append((name, {"reset": True}))
        return web.json_response({"success": name != "busy"})

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=500 if name == "busy" else 200)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/reset_prefix_cache", reset)
    app.router.add_get("/health", health)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _scenario(prefill: list[str], decode: list[str], n: int, prefill_status: int = 200,
                    body: dict[str, Any] | None = None) -> tuple[list[tuple[int, bytes]], list[tuple[str, dict]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    runners, urls = [], {}
    for name in prefill + decode:
        r, url = await _serve(_backend(name, seen, prefill_status))
        runners.append(r)
        urls[name] = url
    proxy, purl = await _serve(make_app(Pools([urls[p] for p in prefill], [urls[d] for d in decode])))
    answers = []
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                async with s.post(purl + "/v1/completions", json=body or CLIENT_BODY) as r:
                    answers.append((r.status, await r.read()))
    finally:
        for r in [proxy, *runners]:
            await r.cleanup()
    return answers, seen


def test_prefill_gets_one_token_then_decode_streams_the_whole_request():
    answers, seen = asyncio.run(_scenario(["p0"], ["d0"], n=1))
    assert answers == [(200, b"".join(STREAM))]
    assert [name for name, _ in seen] == ["p0", "d0"]
    prefill, decode = seen[0][1], seen[1][1]
    assert prefill == {"model": "m", "prompt": "hello", "max_tokens": 1, "stream": False, "ignore_eos": True,
                       "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False,
                                              "remote_engine_id": None, "remote_block_ids": None,
                                              "remote_host": None, "remote_port": None}}
    assert decode == {**CLIENT_BODY, "kv_transfer_params": {"remote_engine_id": "p0"}}


def test_cached_tokens_are_the_prefill_servers_not_the_transferred_kv():
    """The decode server reports the 1024 transferred tokens as cached; the prefill server computed them (its
    own cache hits: 0), so the client must read 0, or margins would bill a computed prompt at the cached price."""
    answers, _ = asyncio.run(_scenario(["p0"], ["d0"], n=1, body={**CLIENT_BODY, "with_usage": True}))
    usage = (b'data: {"choices":[],"usage":{"prompt_tokens":1026,"completion_tokens":2,'
             b'"prompt_tokens_details":{"cached_tokens":0}}}\n\n')
    assert answers == [(200, STREAM[0] + STREAM[1] + usage + STREAM[2])]


def test_the_aggregated_baseline_passes_usage_through_unchanged():
    answers, _ = asyncio.run(_scenario([], ["s0"], n=1, body={**CLIENT_BODY, "with_usage": True}))
    assert answers == [(200, STREAM[0] + STREAM[1] + USAGE + STREAM[2])]


def test_pools_are_taken_in_turn():
    _, seen = asyncio.run(_scenario(["p0", "p1"], ["d0"], n=4))
    assert [name for name, _ in seen] == ["p0", "d0", "p1", "d0", "p0", "d0", "p1", "d0"]
    # each decode request carries the kv_transfer_params of the prefill server that served it
    assert [b["kv_transfer_params"]["remote_engine_id"] for n, b in seen if n == "d0"] == ["p0", "p1", "p0", "p1"]


def test_a_prefill_error_is_returned_as_the_engine_said_it_and_decode_is_not_called():
    answers, seen = asyncio.run(_scenario(["p0"], ["d0"], n=1, prefill_status=400))
    assert answers[0][0] == 400 and json.loads(answers[0][1]) == {"error": {"message": "prompt too long"}}
    assert [name for name, _ in seen] == ["p0"]


def test_aggregated_baseline_sends_each_request_whole_in_turn():
    answers, seen = asyncio.run(_scenario([], ["s0", "s1"], n=3))
    assert answers == [(200, b"".join(STREAM))] * 3
    assert [name for name, _ in seen] == ["s0", "s1", "s0"]
    assert all(body == CLIENT_BODY for _, body in seen)


@pytest.mark.parametrize("argv", [
    ["--port", "1", "--decode", "u"],  # P/D without a prefill server
    ["--port", "1", "--aggregated", "--prefill", "u", "--decode", "v"],  # aggregated with one
    ["--port", "1", "--prefill", "u"],  # no decode server
])
def test_the_command_line_needs_a_consistent_layout(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


async def _reset(prefill: list[str], decode: list[str]) -> tuple[int, Any, list[str]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    runners, urls = [], {}
    for name in prefill + decode:
        r, url = await _serve(_backend(name, seen))
        runners.append(r)
        urls[name] = url
    proxy, purl = await _serve(make_app(Pools([urls[p] for p in prefill], [urls[d] for d in decode])))
    try:
        async with aiohttp.ClientSession() as s, s.post(purl + "/reset_prefix_cache") as r:
            return r.status, await r.json(), [name for name, _ in seen]
    finally:
        for r in [proxy, *runners]:
            await r.cleanup()


def test_a_prefix_cache_reset_reaches_every_server_and_reports_a_refusal():
    assert asyncio.run(_reset(["p0"], ["d0", "d1"])) == (200, {"success": True}, ["p0", "d0", "d1"])
    # vLLM's "not now" ({"success": false}, a KV block still held) comes back as it was, for the harness to retry
    assert asyncio.run(_reset(["p0"], ["busy", "d1"])) == (200, {"success": False}, ["p0", "busy"])


async def _health(names: list[str]) -> tuple[int, str]:
    runners, urls = [], []
    for name in names:
        r, url = await _serve(_backend(name, []))
        runners.append(r)
        urls.append(url)
    proxy, purl = await _serve(make_app(Pools(urls[:1], urls[1:])))
    try:
        async with aiohttp.ClientSession() as s, s.get(purl + "/health") as r:
            return r.status, (await r.text()).replace(urls[-1], "LAST")
    finally:
        for r in [proxy, *runners]:
            await r.cleanup()


def test_health_is_every_servers_health():
    assert asyncio.run(_health(["p0", "d0"])) == (200, "ok")
    assert asyncio.run(_health(["p0", "busy"])) == (503, "LAST: HTTP 500")
