"""The simulated server over real sockets: chunk format, grouping, usage, faults, queueing, timing.

Requests are raw aiohttp streams read line by line (not bench.measure.client), so these tests check the
server independently of the harness it is meant to check.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from bench.measure.prometheus import fetch_metrics, scrape_prometheus, vllm_metric_deltas
from bench.sim import SimConfig, run_sim_in_thread, start_sim_subprocess, stop_sim_subprocess

PROMPT = "one two three four five"  # 5 prompt tokens by the sim's whitespace rule


async def _sse(session: aiohttp.ClientSession, url: str, body: dict[str, Any], path: str = "/v1/completions"):
    """(status, events) with events = [(ms since send, 'data'|'comment', payload)]; 'cut' if dropped."""
    events: list[tuple[float, str, Any]] = []
    t0 = time.perf_counter()
    async with session.post(url + path, json=body) as resp:
        if resp.status != 200:
            return resp.status, await resp.json()
        try:
            async for raw in resp.content:
                t_ms = (time.perf_counter() - t0) * 1e3
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    payload = line[6:]
                    events.append((t_ms, "data", payload if payload == "[DONE]" else json.loads(payload)))
                elif line.startswith(":"):
                    events.append((t_ms, "comment", line))
        except aiohttp.ClientPayloadError:
            events.append(((time.perf_counter() - t0) * 1e3, "cut", None))
    return 200, events


def _run(coro_fn, cfg: SimConfig, *args: Any) -> Any:
    """Start a sim in a thread, open a warm session (connection made), run coro_fn(session, url, *args)."""

    async def main(url: str) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/health") as r:
                assert r.status == 200
            return await coro_fn(session, url, *args)

    with run_sim_in_thread(cfg) as url:
        return asyncio.run(main(url))


def _content(events: list) -> list[tuple[float, dict]]:
    """Content-bearing data events (non-empty text or delta.content)."""
    out = []
    for t, kind, obj in events:
        if kind != "data" or obj == "[DONE]" or not obj["choices"]:
            continue
        ch = obj["choices"][0]
        text = ch.get("text") if "text" in ch else ch["delta"].get("content")
        if text:
            out.append((t, obj))
    return out


def test_completions_stream_grouping_usage_done_and_timing() -> None:
    cfg = SimConfig(ttft_ms=40, itl_ms=15, tokens_per_chunk=3)
    body = {"model": "glm-x", "prompt": PROMPT, "max_tokens": 7, "stream": True,
            "stream_options": {"include_usage": True}}
    status, events = _run(_sse, cfg, body)
    assert status == 200
    content = _content(events)
    # 7 tokens in chunks of 3: 3 + 3 + 1
    assert [c["choices"][0]["text"] for _, c in content] == ["tok tok tok ", "tok tok tok ", "tok "]
    assert [c["choices"][0]["finish_reason"] for _, c in content] == [None, None, "length"]
    assert all(c["object"] == "text_completion" and c["model"] == "glm-x" for _, c in content)
    usage_chunk = events[-2][2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert events[-1][2] == "[DONE]"
    assert len(events) == 5  # 3 content + usage + [DONE], nothing else


def test_chunk_times_follow_ttft_and_itl() -> None:
    # Chunk i is due 40 + 15*i ms after the server gets the request, which is after our send, so
    # the client can never see it earlier (a hard bound). Lateness comes from scheduling on a
    # shared 2-core machine, so the upper bounds are loose but still far below one TTFT or ITL
    # error: the best of 5 runs within 5 ms of TTFT, the median gap within 2 ms of ITL.
    cfg = SimConfig(ttft_ms=40, itl_ms=15, tokens_per_chunk=2)
    body = {"prompt": PROMPT, "max_tokens": 8, "stream": True}

    async def go(session, url):
        return [[t for t, _ in _content((await _sse(session, url, body))[1])] for _ in range(5)]

    runs = _run(go, cfg)
    for times in runs:
        assert len(times) == 4
        for i, t in enumerate(times):
            assert t >= 40.0 + 15.0 * i
    assert min(times[0] for times in runs) <= 40.0 + 5.0
    gaps = sorted(b - a for times in runs for a, b in zip(times, times[1:], strict=False))
    assert gaps[len(gaps) // 2] == pytest.approx(15.0, abs=2.0)


def test_chat_stream_role_chunk_then_deltas_and_chat_prompt_count() -> None:
    cfg = SimConfig(ttft_ms=5, itl_ms=2, tokens_per_chunk=2)
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}],
            "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    status, events = _run(_sse, cfg, body, "/v1/chat/completions")
    assert status == 200
    first = events[0][2]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # role, no content
    content = _content(events)
    texts = [c["choices"][0]["delta"]["content"] for _, c in content]
    assert texts == ["tok tok ", "tok tok ", "tok "]
    assert sum(len(t.split()) for t in texts) == 5
    assert events[-2][2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}  # 2 + 5
    assert events[-1][2] == "[DONE]"


def test_no_usage_chunk_unless_requested_and_usage_modes() -> None:
    stream = {"prompt": PROMPT, "max_tokens": 4, "stream": True}
    with_usage = {**stream, "stream_options": {"include_usage": True}}
    fast = {"ttft_ms": 1, "itl_ms": 1}
    _, events = _run(_sse, SimConfig(**fast), stream)
    assert not any(kind == "data" and obj != "[DONE]" and "usage" in obj for _, kind, obj in events)
    _, events = _run(_sse, SimConfig(**fast, usage_mode="missing"), with_usage)
    assert len(_content(events)) == 4 and events[-1][2] == "[DONE]"
    assert not any(kind == "data" and obj != "[DONE]" and "usage" in obj for _, kind, obj in events)
    _, events = _run(_sse, SimConfig(**fast, usage_mode="wrong", usage_offset_tokens=3), with_usage)
    assert events[-2][2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}  # 4 + 3


async def _post_json(session: aiohttp.ClientSession, url: str, path: str, body: dict) -> tuple[int, Any]:
    async with session.post(url + path, json=body) as r:
        return r.status, await r.json()


def test_non_streaming_responses_and_eos() -> None:
    cfg = SimConfig(ttft_ms=2, itl_ms=1, output_tokens=4)

    async def go(session, url):
        return [
            await _post_json(session, url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 10}),
            await _post_json(session, url, "/v1/completions",
                             {"prompt": PROMPT, "max_tokens": 10, "ignore_eos": True}),
            await _post_json(session, url, "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
        ]

    (s1, eos), (s2, ignored), (s3, chat) = _run(go, cfg)
    assert s1 == s2 == s3 == 200
    assert eos["choices"][0]["text"] == "tok " * 4 and eos["choices"][0]["finish_reason"] == "stop"
    assert eos["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert ignored["usage"]["completion_tokens"] == 10 and ignored["choices"][0]["finish_reason"] == "length"
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "tok tok tok "}
    assert chat["usage"]["prompt_tokens"] == 1


def test_error_injection_500_deterministic_and_counted() -> None:
    cfg = SimConfig(ttft_ms=0, itl_ms=0, error_rate=0.5, seed=11)

    async def go(session, url):
        statuses = []
        for _ in range(20):
            async with session.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}) as r:
                statuses.append(r.status)
                if r.status == 500:
                    body = await r.json()
                    assert body["object"] == "error" and body["code"] == 500
        text = await fetch_metrics(url, session)
        return statuses, scrape_prometheus(text or "")

    statuses_a, metrics = _run(go, cfg)
    statuses_b, _ = _run(go, cfg)
    assert statuses_a == statuses_b  # same seed, same arrival order -> same faults
    assert set(statuses_a) == {200, 500}
    assert metrics["sim:injected_errors_total"] == statuses_a.count(500)
    always = SimConfig(error_rate=1.0)
    status, body = _run(_post_json, always, "/v1/completions", {"prompt": "x", "max_tokens": 1})
    assert status == 500


def test_cut_stream_stops_after_half_the_chunks() -> None:
    cfg = SimConfig(ttft_ms=2, itl_ms=2, cut_rate=1.0)
    body = {"prompt": PROMPT, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    status, events = _run(_sse, cfg, body)
    assert status == 200
    assert len(_content(events)) == 3  # 6 chunks, dropped after 6 // 2
    assert events[-1][1] == "cut"
    assert not any(obj == "[DONE]" for _, _, obj in events)

    async def non_stream(session, url):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _post_json(session, url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3})

    _run(non_stream, cfg)  # without streaming the connection drops before any response


def test_queueing_fifo_with_one_stream_slot() -> None:
    # A stream lasts ttft + (n-1)*itl = 20 + 4*10 = 60 ms; the second request waits for the slot,
    # so its first chunk comes one full stream (60 ms) after the first request's first chunk.
    cfg = SimConfig(ttft_ms=20, itl_ms=10, max_concurrent_streams=1)
    body = {"prompt": PROMPT, "max_tokens": 5, "stream": True}

    async def go(session, url):
        t0 = time.perf_counter()

        async def one(delay_s: float):
            await asyncio.sleep(delay_s)
            start = (time.perf_counter() - t0) * 1e3
            _, events = await _sse(session, url, body)
            return [start + t for t, _ in _content(events)]

        async def mid_metrics():
            await asyncio.sleep(0.040)
            return scrape_prometheus(await fetch_metrics(url, session) or "")

        return await asyncio.gather(one(0.0), one(0.005), mid_metrics())

    first, second, mid = _run(go, cfg)
    assert len(first) == len(second) == 5
    # The first request's first chunk is due at send + 20 ms (its send is our t=0); the second's
    # can come no sooner than one full stream (60 ms) after that: t >= 80 ms. The client only
    # ever sees chunks late, so the lower bound is exact; the upper bound allows scheduling noise.
    assert second[0] >= 20.0 + 60.0
    assert second[0] <= 20.0 + 60.0 + 40.0  # not a second full stream (60 ms) later
    assert first[0] < second[0] - 40.0  # and the first was not held back
    running = [v for k, v in mid.items() if k.startswith("vllm:num_requests_running")]
    waiting = [v for k, v in mid.items() if k.startswith("vllm:num_requests_waiting")]
    kv = [v for k, v in mid.items() if k.startswith("vllm:kv_cache_usage_perc")]
    assert running == [1.0] and waiting == [1.0] and kv == [1.0]


def test_absolute_deadlines_do_not_drift() -> None:
    # 400 chunks at 1 ms: chunk i is due at 10 + i ms. Accumulated sleeps would add each wake-up's
    # lateness (>= ~50 us even for a precise sleep, ~1 ms for an event-loop timer) 400 times over,
    # so the last 50 chunks would all be >= 17 ms behind (50-54 ms when tried). Absolute deadlines
    # let the stream catch up: one of them is within 10 ms even if the client stalled meanwhile.
    cfg = SimConfig(ttft_ms=10, itl_ms=1)
    body = {"prompt": PROMPT, "max_tokens": 400, "stream": True}
    _, events = _run(_sse, cfg, body)
    times = [t for t, _ in _content(events)]
    assert len(times) == 400
    lateness = [t - (10.0 + 1.0 * i) for i, t in enumerate(times)]
    assert min(lateness) >= 0.0
    assert min(lateness[-50:]) <= 10.0


def test_ping_comments_between_chunks() -> None:
    cfg = SimConfig(ttft_ms=4, itl_ms=4, ping=True)
    _, events = _run(_sse, cfg, {"prompt": PROMPT, "max_tokens": 3, "stream": True})
    kinds = [k for _, k, obj in events if obj != "[DONE]"]
    assert kinds == ["comment", "data", "comment", "data", "comment", "data"]
    assert all(obj == ": ping" for _, k, obj in events if k == "comment")


def test_models_health_bad_requests_and_token_counters() -> None:
    cfg = SimConfig(model="sim-glm", ttft_ms=1, itl_ms=1, tokens_per_chunk=4)

    async def go(session, url):
        async with session.get(url + "/v1/models") as r:
            models = await r.json()
        before = scrape_prometheus(await fetch_metrics(url + "/v1", session) or "")
        for _ in range(3):
            await _sse(session, url, {"prompt": PROMPT, "max_tokens": 9, "stream": True})
        after = scrape_prometheus(await fetch_metrics(url, session) or "")
        bad = [
            await _post_json(session, url, "/v1/completions", {"max_tokens": 3}),
            await _post_json(session, url, "/v1/completions", {"prompt": "x", "max_tokens": 0}),
            await _post_json(session, url, "/v1/chat/completions", {"messages": "hi"}),
        ]
        return models, before, after, bad

    models, before, after, bad = _run(go, cfg)
    assert models["data"][0]["id"] == "sim-glm"
    d = vllm_metric_deltas(before, after)
    assert d["prompt_tokens"] == 15 and d["generation_tokens"] == 27  # 3 x 5 and 3 x 9
    assert d["prefix_cache_hit_rate"] is None and d["num_preemptions"] is None  # the sim does not export them
    assert after['vllm:request_success_total{finished_reason="length",model_name="sim-glm"}'] == 3
    assert [s for s, _ in bad] == [400, 400, 400]
    assert "prompt" in bad[0][1]["message"] and "max_tokens" in bad[1][1]["message"]


def test_subprocess_server_serves_and_stops() -> None:
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=1, itl_ms=1))
    try:
        assert url.startswith("http://127.0.0.1:")

        async def go():
            async with aiohttp.ClientSession() as session:
                return await _sse(session, url, {"prompt": PROMPT, "max_tokens": 3, "stream": True})

        status, events = asyncio.run(go())
        assert status == 200 and len(_content(events)) == 3
    finally:
        stop_sim_subprocess(proc)
    assert proc.returncode is not None


def test_client_disconnect_frees_the_stream_slot() -> None:
    # One slot; the first client reads one chunk and hangs up. The server notices on its next write
    # (<= 5 ms later) and frees the slot: the second request must not wait out the first's 250 ms
    # stream (50 chunks x 5 ms), let alone forever if the slot leaked.
    cfg = SimConfig(ttft_ms=2, itl_ms=5, max_concurrent_streams=1)
    body = {"prompt": PROMPT, "max_tokens": 50, "stream": True}

    async def go(session, url):
        resp = await session.post(url + "/v1/completions", json=body)
        await resp.content.readline()
        resp.close()  # drop the connection mid-stream
        await asyncio.sleep(0.02)
        _, events = await asyncio.wait_for(_sse(session, url, {**body, "max_tokens": 2}), timeout=5)
        metrics = scrape_prometheus(await fetch_metrics(url, session) or "")
        return events, metrics

    events, metrics = _run(go, cfg)
    assert len(_content(events)) == 2 and events[-1][2] == "[DONE]"
    assert _content(events)[0][0] < 100.0
    assert [v for k, v in metrics.items() if k.startswith("vllm:num_requests_running")] == [0.0]


def test_precise_waits_do_not_serialize_concurrent_streams() -> None:
    # 32 streams x 50 chunks at 1 ms, with a 2 ms precise-sleep window: a stream needs
    # 2 + 49 = 51 ms. If one stream's blocking wait held the loop until its own deadline while the
    # others waited, the streams would run one after another: 32 x 51 ms = 1.6 s.
    cfg = SimConfig(ttft_ms=2, itl_ms=1, spin_ms=2)
    body = {"prompt": PROMPT, "max_tokens": 50, "stream": True}

    async def go(session, url):
        t0 = time.perf_counter()
        results = await asyncio.gather(*[_sse(session, url, body) for _ in range(32)])
        return time.perf_counter() - t0, results

    wall_s, results = _run(go, cfg)
    assert all(len(_content(events)) == 50 for _, events in results)
    assert wall_s < 0.8
