"""The P/D proxy: one OpenAI-compatible endpoint in front of a prefill pool and a decode pool of vLLM servers.

Why a proxy of our own: vLLM serves each role as an ordinary OpenAI server and leaves the routing to a proxy
(vLLM ships only toy ones, in its source tree's tests and examples, not in the wheel). This one does what
vLLM's toy proxy for NIXL does (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py, vLLM 0.32): each
request goes to the next prefill server with max_tokens=1, no streaming and `kv_transfer_params`
{do_remote_decode: true}, which makes the prefill server's connector keep and publish the prompt's KV; then
the whole request goes to the next decode server with the `kv_transfer_params` the prefill answer carried
(NIXL, Mooncake: where to pull the KV from; absent for the shared-storage connector, which finds the KV by
the prompt's hash), and the decode server's stream is passed through byte for byte but for one field. So the
client's TTFT includes the prefill, the KV transfer and the decode server's first step, as a user of a P/D
deployment sees it. The one field: the decode server counts the prompt tokens whose KV it received as
cached (`usage.prompt_tokens_details.cached_tokens`), but they were computed, on the prefill server; a
prompt is billed at the cached price only for the prefill server's own prefix-cache hits, so the proxy puts
the prefill answer's cached_tokens there. With `--aggregated` every request goes whole to the next server
of one pool: the baseline of the same servers without P/D.

A prefill error (e.g. HTTP 400 for a prompt that is too long) is returned to the client as it came, so the
point records the engine's own answer. GET /health is 200 when every server's /health is (the harness's
health watch polls it, so a hung server fails the point as it would for one server), else 503 naming the
first that is not; GET /v1/models is the first decode server's; POST /reset_prefix_cache (the harness empties
the prefix cache between points) goes to every server and succeeds when all of them did; there is no
/metrics (one server's metrics would misdescribe the deployment, so the row says they are unavailable).

Usage: python -m bench.engines.disagg_proxy --port P --prefill URL [--prefill URL ...] --decode URL [...]
       python -m bench.engines.disagg_proxy --port P --aggregated --decode URL [...]
aiohttp only: it must start in a second, without importing vLLM or torch.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("bench.disagg_proxy")

HOST = "127.0.0.1"
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
# what the prefill request asks of the prefill server's connector (vLLM's toy proxy sends exactly these)
PREFILL_KV_TRANSFER_PARAMS: dict[str, Any] = {
    "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None, "remote_block_ids": None,
    "remote_host": None, "remote_port": None,
}


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the prefill server gets it: one output token, no stream, no minimum length (vLLM refuses
    min_tokens > max_tokens), and the connector's do_remote_decode flag."""
    out = {k: v for k, v in body.items() if k not in ("stream_options", "min_tokens")}
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    out["stream"] = False
    out["kv_transfer_params"] = dict(PREFILL_KV_TRANSFER_PARAMS)
    return out


def own_cached_tokens(obj: Any, cached: int | None) -> bool:
    """Set `obj`'s usage.prompt_tokens_details.cached_tokens to `cached` (the prefill server's); True if it had one."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if not isinstance(details, dict) or "cached_tokens" not in details:
        return False
    details["cached_tokens"] = cached
    return True


def prefill_cached_tokens(answer: dict[str, Any] | None) -> int | None:
    usage = (answer or {}).get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return details.get("cached_tokens") if isinstance(details, dict) else None


class UsageRewriter:
    """Passes an SSE stream through, rewriting cached_tokens in the event that carries usage (`own_cached_tokens`).
    Events are cut at blank lines; an event without `prompt_tokens_details` goes out unchanged and unparsed."""

    def __init__(self, cached: int | None) -> None:
        self.cached, self.buf = cached, b""

    def feed(self, chunk: bytes) -> bytes:
        self.buf += chunk
        end = self.buf.rfind(b"\n\n")
        if end < 0:
            return b""
        ready, self.buf = self.buf[:end + 2], self.buf[end + 2:]
        if b"prompt_tokens_details" not in ready:
            return ready
        return b"".join(self._event(e) for e in ready.split(b"\n\n")[:-1])

    def _event(self, event: bytes) -> bytes:
        if event.startswith(b"data: {") and b"prompt_tokens_details" in event:
            try:
                obj = json.loads(event[6:])
            except ValueError:
                return event + b"\n\n"
            if own_cached_tokens(obj, self.cached):
                return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
        return event + b"\n\n"

    def flush(self) -> bytes:
        rest, self.buf = self.buf, b""
        return rest


def decode_body(body: dict[str, Any], prefill_answer: dict[str, Any] | None) -> dict[str, Any]:
    """The request as the decode server gets it: unchanged, plus the prefill answer's kv_transfer_params."""
    params = (prefill_answer or {}).get("kv_transfer_params")
    return {**body, "kv_transfer_params": params} if params else dict(body)


class Pools:
    """The servers behind the proxy; each pool is taken in turn (round robin), as vLLM's toy proxy does."""

    def __init__(self, prefill: list[str], decode: list[str]) -> None:
        if not decode:
            raise ValueError("the proxy needs at least one decode (or aggregated) server")
        self.prefill, self.decode = list(prefill), list(decode)
        self._p: Iterator[str] = itertools.cycle(self.prefill) if self.prefill else iter(())
        self._d: Iterator[str] = itertools.cycle(self.decode)

    @property
    def aggregated(self) -> bool:
        return not self.prefill

    def next_prefill(self) -> str:
        return next(self._p)

    def next_decode(self) -> str:
        return next(self._d)


POOLS = web.AppKey("pools", Pools)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "proxy_error", "code": status}}, status=status)


async def _forward(request: web.Request) -> web.StreamResponse:
    pools, session = request.app[POOLS], request.app[SESSION]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _json_error(400, "request body is not JSON")
    if not isinstance(body, dict):
        return _json_error(400, "request body is not a JSON object")
    path = request.path
    answer: dict[str, Any] | None = None
    try:
        if not pools.aggregated:
            async with session.post(pools.next_prefill() + path, json=prefill_body(body)) as r:
                raw = await r.read()
                if r.status != 200:  # the engine's own answer, as it came
                    return web.Response(status=r.status, body=raw, content_type=r.content_type)
                answer = json.loads(raw)
                if not isinstance(answer, dict):
                    return _json_error(502, "P/D proxy: the prefill server's answer is not a JSON object")
        async with session.post(pools.next_decode() + path, json=decode_body(body, answer)) as r:
            if answer is not None and r.status == 200 and r.content_type == "application/json":  # not streamed
                obj = json.loads(await r.read())
                own_cached_tokens(obj, prefill_cached_tokens(answer))
                return web.json_response(obj)
            resp = web.StreamResponse(status=r.status, headers={"Content-Type": r.headers.get(
                "Content-Type", "application/json")})
            await resp.prepare(request)
            rewrite = UsageRewriter(prefill_cached_tokens(answer)) if answer is not None and r.status == 200 else None
            async for chunk in r.content.iter_any():
                out = rewrite.feed(chunk) if rewrite is not None else chunk
                if out:
                    await resp.write(out)
            if rewrite is not None and (rest := rewrite.flush()):
                await resp.write(rest)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        log.warning("backend request failed: %s: %s", type(e).__name__, e)
        return _json_error(502, f"P/D proxy: backend request failed: {type(e).__name__}: {e}")


HEALTH_TIMEOUT_S = 1.0  # under the harness's own /health probe timeout (2 s), so its 503 naming a member arrives


async def _health(request: web.Request) -> web.Response:
    pools, session = request.app[POOLS], request.app[SESSION]
    urls = [*pools.prefill, *pools.decode]

    async def one(url: str) -> str | None:
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as r:
                return None if r.status == 200 else f"{url}: HTTP {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return f"{url}: {type(e).__name__}"

    bad = [b for b in await asyncio.gather(*(one(u) for u in urls)) if b is not None]
    return web.Response(text="ok") if not bad else web.Response(status=503, text="; ".join(bad))


async def _models(request: web.Request) -> web.Response:
    pools = request.app[POOLS]
    try:
        async with request.app[SESSION].get(pools.decode[0] + "/v1/models",
                                            timeout=aiohttp.ClientTimeout(total=10)) as r:  # never hangs
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return _json_error(502, f"P/D proxy: {type(e).__name__}: {e}")


async def _reset_prefix_cache(request: web.Request) -> web.Response:
    """Every server's cache emptied, or the first refusal as that server gave it (vLLM answers
    {"success": false} while a KV block is held; the harness retries)."""
    pools, session = request.app[POOLS], request.app[SESSION]
    try:
        for url in [*pools.prefill, *pools.decode]:
            async with session.post(url + request.path) as r:
                raw = await r.read()
                body = json.loads(raw) if r.status == 200 else None
                if r.status != 200 or not (isinstance(body, dict) and body.get("success") is True):
                    return web.Response(status=r.status, body=raw, content_type=r.content_type)
    except (aiohttp.ClientError, ValueError) as e:
        return _json_error(502, f"P/D proxy: {type(e).__name__}: {e}")
    return web.json_response({"success": True})


def make_app(pools: Pools) -> web.Application:
    """The proxy's aiohttp app over `pools` (a client session is opened on startup, closed on cleanup)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[POOLS] = pools

    async def session_ctx(app: web.Application) -> Any:
        # no total timeout: the harness's client bounds each request; no connection cap: the load decides
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                               connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    for p in OPENAI_PATHS:
        app.router.add_post(p, _forward)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/reset_prefix_cache", _reset_prefix_cache)
    return app


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.engines.disagg_proxy", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefill", action="append", default=[], help="a prefill server's root URL (repeatable)")
    ap.add_argument("--decode", action="append", default=[], help="a decode server's root URL (repeatable)")
    ap.add_argument("--aggregated", action="store_true", help="no P/D: send each request whole to --decode servers")
    args = ap.parse_args(argv)
    if args.aggregated == bool(args.prefill):
        ap.error("give --prefill servers, or --aggregated without them")
    if not args.decode:
        ap.error("give at least one --decode server")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("P/D proxy on port %d: prefill %s, decode %s", args.port, args.prefill or "-", args.decode)
    web.run_app(make_app(Pools(args.prefill, args.decode)), host=HOST, port=args.port, access_log=None,
                print=None, shutdown_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
