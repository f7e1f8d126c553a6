"""Simulated OpenAI-compatible streaming server (aiohttp) with exact, configurable timing.

It exists to check the harness (a client must measure exactly what this server was told to
produce) and to let users try pipelines without a GPU. It never stands in for vLLM in an
end-to-end claim.

Endpoints: POST /v1/completions and /v1/chat/completions (stream true/false), GET /v1/models and
/v1/models/<id> (any id: requests may name any model), GET /health, GET /metrics (Prometheus text with
vLLM-named series). Chunks follow vLLM's OpenAI server: ``data: {json}\\n\\n`` events, chat streams
open with a role-only chunk (empty content),
the last content chunk carries finish_reason, an optional usage-only chunk (``choices: []``)
follows when ``stream_options.include_usage`` is true, then ``data: [DONE]``.

Per-chunk cost is one precomputed bytes write (plus one timer), so at high rates the client
process, not this server, is the bottleneck. Token and timing rules live in `bench.sim.model`;
ways to run the app (thread, subprocess, foreground) in `bench.sim.runners`.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bench.sim.model import (
    TOKEN_TEXT,
    BadRequest,
    FifoSlots,
    Pacer,
    SimConfig,
    chunk_offsets_s,
    chunk_sizes,
    draw_fate,
    offset_deadlines,
    paced_deadlines,
    plan_output,
    prompt_tokens_chat,
    prompt_tokens_completions,
    request_rng,
    usage_block,
)
from bench.units import ms_to_s

__all__ = ["make_app", "render_metrics"]

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]\n\n"
_PING = b": ping\n\n"
# Opt-in (tests/perf/test_timestamps_perf.py): append one JSON line per finished stream to this file, the
# prompt's crc32 and the perf_counter_ns (CLOCK_MONOTONIC, system-wide) just before each chunk's write, so a
# client's stamps can be compared with when chunks were really sent, not only with the told schedule.
_SEND_LOG = os.environ.get("MAAS_BENCH_SIM_SEND_LOG")


class _SimState:
    """Counters behind /metrics and the request sequence number that seeds per-request draws."""

    def __init__(self, cfg: SimConfig, pacer: Pacer | None = None) -> None:
        self.cfg, self.pacer = cfg, pacer
        self.next_index = 0
        self.running = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.success: Counter[str] = Counter()
        self.injected_errors = 0
        self.injected_cuts = 0
        self.slots = FifoSlots(cfg.max_concurrent_streams) if cfg.max_concurrent_streams else None
        self.clock = _Clock(ms_to_s(cfg.spin_ms))

    @property
    def waiting(self) -> int:
        return len(self.slots.waiters) if self.slots else 0

    async def acquire(self) -> bool:
        """Take a stream slot; True if the request had to queue for it."""
        queued = False
        if self.slots:
            queued = self.slots.free == 0 or bool(self.slots.waiters)
            await self.slots.acquire()
        self.running += 1
        return queued

    def release(self) -> None:
        self.running -= 1
        if self.slots:
            self.slots.release()


_STATE_KEY: web.AppKey[_SimState] = web.AppKey("sim_state", _SimState)


class _Clock:
    """Absolute-deadline waits for every stream of one server, precise to ~0.1 ms.

    Event-loop timers wake 0.2-1.4 ms late (epoll's 1 ms granularity, rounded up), which would
    be the whole error budget of a golden accuracy test. One scheduler task keeps a heap of
    deadlines: it sleeps on a loop timer until ``spin_s`` before the earliest one, then covers the
    rest with a precise blocking ``time.sleep`` (it releases the GIL, so a client in another
    thread keeps running) and wakes every waiter that is due. Blocking only ever targets the
    earliest pending deadline, so no stream is made late by another's wait; dense deadlines mean
    short blocks, and incoming I/O waits at most ``spin_s``. With spin_s = 0 waits are plain
    ``asyncio.sleep`` calls (cheapest, ~1 ms coarse).
    """

    def __init__(self, spin_s: float) -> None:
        self.spin_s = spin_s
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._poke: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def wait_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self.spin_s <= 0:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            return
        if deadline <= loop.time():
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        elif self._heap[0][2] is fut and self._poke is not None and not self._poke.done():
            self._poke.set_result(None)  # a new earliest deadline: re-plan the scheduler's sleep
        await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            if not heap:
                self._poke = loop.create_future()
                await self._poke
                continue
            now = loop.time()
            earliest = heap[0][0]
            if earliest - now > self.spin_s:
                self._poke = poke = loop.create_future()
                timer = loop.call_at(earliest - self.spin_s, _resolve, poke)
                await poke
                timer.cancel()
                continue
            if earliest > now:
                time.sleep(earliest - now)
                now = loop.time()
            while heap and heap[0][0] <= now:
                fut = heapq.heappop(heap)[2]
                if not fut.done():
                    fut.set_result(None)
            await asyncio.sleep(0)  # let the woken streams write before planning the next wait

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _error(status: int, message: str, err_type: str) -> web.Response:
    body = {"object": "error", "message": message, "type": err_type, "param": None, "code": status}
    return web.json_response(body, status=status)


def _drop_connection(request: web.Request) -> None:
    """Simulate a crashed stream: close the socket without finishing the HTTP response."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class _Chunks:
    """The bytes of one request's stream, built once so each chunk is a single write."""

    def __init__(self, kind: str, rid: str, created: int, model: str, sizes: list[int], finish: str) -> None:
        self.kind = kind
        self.head = {"id": rid, "created": created, "model": model}
        self.sizes = sizes
        self.finish = finish
        k = sizes[0]
        self.full = self._content(TOKEN_TEXT * k, None)
        self.last = self._content(TOKEN_TEXT * sizes[-1], finish)

    def _content(self, text: str, finish: str | None) -> bytes:
        if self.kind == "chat":
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            return _sse({**self.head, "object": "chat.completion.chunk", "choices": [choice]})
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        return _sse({**self.head, "object": "text_completion", "choices": [choice]})

    def role(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return _sse({**self.head, "object": "chat.completion.chunk", "choices": [choice]})

    def usage(self, usage: dict[str, int]) -> bytes:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return _sse({**self.head, "object": obj, "choices": [], "usage": usage})


def _parse_request(kind: str, body: Any, cfg: SimConfig) -> dict[str, Any]:
    """Validate an OpenAI request body; returns the few fields the sim acts on."""
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    if kind == "chat":
        prompt_tokens = prompt_tokens_chat(body.get("messages"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        prompt_tokens = prompt_tokens_completions(body.get("prompt"))
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = cfg.default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens: must be an integer >= 1")
    if body.get("n", 1) != 1:
        raise BadRequest("n: the simulator serves n=1 only")
    model = body.get("model") or cfg.model
    if not isinstance(model, str):
        raise BadRequest("model: must be a string")
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("stream_options: must be an object")
    return {
        "prompt_tokens": prompt_tokens,
        "max_tokens": max_tokens,
        "model": model,
        "stream": stream,
        "include_usage": stream and bool(opts.get("include_usage", False)),
        "ignore_eos": bool(body.get("ignore_eos", False)),
        "prompt_crc32": zlib.crc32(str(body.get("prompt", body.get("messages"))).encode()) if _SEND_LOG else 0,
    }


async def _generate(request: web.Request, kind: str) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    # The clock starts at handler entry, before body parsing, so the sim's own request handling
    # does not add to the TTFT the client sees (a queued request restarts it when it gets a slot).
    t_entry = loop.time()
    state: _SimState = request.app[_STATE_KEY]
    cfg = state.cfg
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body: not valid JSON", "BadRequestError")
    try:
        req = _parse_request(kind, body, cfg)
    except BadRequest as e:
        return _error(400, str(e), "BadRequestError")

    index = state.next_index
    state.next_index += 1
    rng = request_rng(cfg, index)
    fate = draw_fate(cfg, rng)
    if fate.error:
        state.injected_errors += 1
        return _error(500, "simulated server error (error_rate)", "InternalServerError")

    n_tokens, finish = plan_output(cfg, req["max_tokens"], req["ignore_eos"])
    refused = state.pacer.refuse(req["prompt_tokens"], n_tokens) if state.pacer else None
    if refused:
        return _error(400, refused, "BadRequestError")
    sizes = chunk_sizes(n_tokens, cfg.tokens_per_chunk)
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    chunks = _Chunks(kind, f"{prefix}-sim{index:012d}", int(time.time()), req["model"], sizes, finish)

    resp: web.StreamResponse | None = None
    if req["stream"]:
        # Headers go out at once (as vLLM does); queueing and prefill then delay the first chunk.
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)

    queued = await state.acquire()
    try:
        slot_t = loop.time() if queued else t_entry
        state.prompt_tokens_total += req["prompt_tokens"]
        due = paced_deadlines(state.pacer, req["prompt_tokens"], sizes) if state.pacer else offset_deadlines(
            slot_t, chunk_offsets_s(cfg, len(sizes), req["prompt_tokens"], rng))
        if resp is None:
            await state.clock.wait_until([t async for t in due][-1])
            state.generation_tokens_total += n_tokens
            if fate.cut:
                state.injected_cuts += 1
                _drop_connection(request)
                return web.Response(status=500)  # never reaches the client: the socket is gone
            state.success[finish] += 1
            return web.json_response(_full_response(kind, chunks, n_tokens, req, cfg))
        return await _stream(request, resp, state, chunks, req, due, slot_t, fate.cut)
    except ConnectionError:
        log.debug("sim: client went away during request %d", index)
        return resp if resp is not None else web.Response(status=499)
    finally:
        state.release()


async def _stream(
    request: web.Request,
    resp: web.StreamResponse,
    state: _SimState,
    chunks: _Chunks,
    req: dict[str, Any],
    due: AsyncIterator[float],
    slot_t: float,
    cut: bool,
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    cfg = state.cfg
    sizes = chunks.sizes
    n = len(sizes)
    cut_after = n // 2 if cut else -1
    prev = slot_t
    sent_ns: list[int] = []
    for i in range(n):
        if i == cut_after:
            state.injected_cuts += 1
            _drop_connection(request)
            return resp
        deadline = await anext(due)
        if cfg.ping:
            delay = (prev + deadline) / 2 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(_PING)
        await state.clock.wait_until(deadline)
        data = chunks.last if i == n - 1 else chunks.full
        if i == 0 and chunks.kind == "chat":
            data = chunks.role() + data
        if _SEND_LOG:
            sent_ns.append(time.perf_counter_ns())
        await resp.write(data)
        state.generation_tokens_total += sizes[i]
        prev = deadline
    tail = b""
    if req["include_usage"]:
        usage = usage_block(cfg, req["prompt_tokens"], sum(sizes))
        if usage is not None:
            tail += chunks.usage(usage)
    await resp.write(tail + _DONE)
    if _SEND_LOG:
        with open(_SEND_LOG, "a") as f:
            f.write(json.dumps({"prompt_crc32": req["prompt_crc32"], "sent_ns": sent_ns}) + "\n")
    state.success[chunks.finish] += 1
    await resp.write_eof()
    return resp


def _full_response(kind: str, chunks: _Chunks, n_tokens: int, req: dict[str, Any], cfg: SimConfig) -> dict:
    text = TOKEN_TEXT * n_tokens
    if kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": chunks.finish,
            "stop_reason": None,
        }
        obj = "chat.completion"
    else:
        choice = {
            "index": 0, "text": text, "logprobs": None, "finish_reason": chunks.finish, "stop_reason": None
        }
        obj = "text_completion"
    out: dict[str, Any] = {**chunks.head, "object": obj, "choices": [choice]}
    usage = usage_block(cfg, req["prompt_tokens"], n_tokens)
    if usage is not None:
        out["usage"] = usage
    return out


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completions")


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _models(request: web.Request) -> web.Response:
    cfg = request.app[_STATE_KEY].cfg
    card = {"id": cfg.model, "object": "model", "created": 0, "owned_by": "maas-bench-sim", "root": cfg.model}
    return web.json_response({"object": "list", "data": [card]})


async def _model(request: web.Request) -> web.Response:
    """OpenAI's "retrieve model": the sim serves whatever model name a request gives, so any id is served
    (the harness's check that an `openai` endpoint serves the sweep's model: bench.engines.identity)."""
    name = request.match_info["model"]
    return web.json_response({"id": name, "object": "model", "created": 0, "owned_by": "maas-bench-sim",
                              "root": name})


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


def render_metrics(state: _SimState) -> str:
    """Prometheus text exposition of the sim's counters, using vLLM's metric names."""
    model = state.cfg.model.replace("\\", "\\\\").replace('"', '\\"')
    label = '{model_name="' + model + '"}'
    lines: list[str] = []

    def add(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for series, value in samples:
            lines.append(f"{series} {float(value)!r}")

    add("vllm:num_requests_running", "gauge", "Requests being generated.",
        [(f"vllm:num_requests_running{label}", state.running)])
    add("vllm:num_requests_waiting", "gauge", "Requests queued for a stream slot.",
        [(f"vllm:num_requests_waiting{label}", state.waiting)])
    if state.cfg.max_concurrent_streams:
        # The sim's stand-in for KV-cache occupancy: the share of stream slots in use.
        add("vllm:kv_cache_usage_perc", "gauge", "Share of stream slots in use (1 = full).",
            [(f"vllm:kv_cache_usage_perc{label}", state.running / state.cfg.max_concurrent_streams)])
    add("vllm:prompt_tokens", "counter", "Prompt tokens admitted.",
        [(f"vllm:prompt_tokens_total{label}", state.prompt_tokens_total)])
    add("vllm:generation_tokens", "counter", "Output tokens sent.",
        [(f"vllm:generation_tokens_total{label}", state.generation_tokens_total)])
    reasons = sorted(set(state.success) | {"length", "stop"})
    add("vllm:request_success", "counter", "Requests finished, by finish reason.",
        [(f'vllm:request_success_total{{finished_reason="{r}",model_name="{model}"}}', state.success[r])
         for r in reasons])
    add("sim:injected_errors", "counter", "Requests answered 500 by error injection.",
        [("sim:injected_errors_total", state.injected_errors)])
    add("sim:injected_cuts", "counter", "Connections dropped mid-response by cut injection.",
        [("sim:injected_cuts_total", state.injected_cuts)])
    return "\n".join(lines) + "\n"


async def _metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[_STATE_KEY])
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def make_app(cfg: SimConfig | None = None, pacer: Pacer | None = None) -> web.Application:
    """The aiohttp application of the simulated server (state lives in the app); `pacer` times the tokens
    instead of the config's TTFT and ITL."""
    app = web.Application()
    state = _SimState(cfg or SimConfig(), pacer)
    app[_STATE_KEY] = state

    async def stop_clock(_: web.Application) -> None:
        state.clock.close()
        if state.pacer is not None:
            state.pacer.close()

    app.on_cleanup.append(stop_clock)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
