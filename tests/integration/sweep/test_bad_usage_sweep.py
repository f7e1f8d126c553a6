"""Issue 25: a provider whose `usage` block is malformed ("8", 1e300, "abc", cached_tokens 1e30, negative
counts) used to abort the point; now each such request records the protocol error with the raw value, the
points and the sweep go on, and the row counts the requests (`usage_protocol_errors`)."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from aiohttp import web
from fake_endpoint import serve

from bench.config.sweep import Sweep
from bench.sweep.run import run_sweep
from bench.sweep.store import load_requests

USAGES = [  # one per request, in turn: five malformed, one good
    '{"prompt_tokens":16,"completion_tokens":"8"}',
    '{"prompt_tokens":16,"completion_tokens":1e300}',
    '{"prompt_tokens":16,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1e30}}',
    '{"prompt_tokens":"abc","completion_tokens":4}',
    '{"prompt_tokens":16,"completion_tokens":4}',
    '{"prompt_tokens":-2,"completion_tokens":-4}',
]


@pytest.fixture(scope="module")
def bad_usage_url():
    counter = itertools.count()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/models":  # the model check before measuring
            return web.json_response({"object": "list", "data": [{"id": "glm-4.5-tiny"}]})
        if request.method != "POST":  # /metrics: this endpoint has none
            return web.Response(status=404)
        body = await request.json()
        i = next(counter)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(body.get("max_tokens", 4)):
            await resp.write(b'data: {"choices":[{"index":0,"text":" ab"}]}\n\n')
        await resp.write(b'data: {"choices":[],"usage":' + USAGES[i % len(USAGES)].encode() + b"}\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    with serve(handle) as url:
        yield url


def test_malformed_usage_is_counted_per_request_and_the_sweep_goes_on(tmp_path, bad_usage_url):
    sweep = Sweep(name="usage", engine={"kind": "openai", "base_url": bad_usage_url},
                  hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, server={"model": "glm-4.5-tiny"},
                  load={"concurrency": [1, 2], "num_requests": 6, "warmup_requests": 0, "cooldown": False},
                  workloads=[{"name": "w", "input_len": 16, "output_len": 4}])
    summary = run_sweep(sweep, out_root=tmp_path)
    assert summary.points_failed == 0 and len(summary.rows) == 2
    total = 0
    for row in summary.rows:
        assert row["status"] == "ok" and row["completed"] == 6, row.get("error")
        assert 0 < row["usage_protocol_errors"] <= 6
        total += row["usage_protocol_errors"]
        req = load_requests(summary.run_dir, row["point_id"])
        errs = [e for e in req["protocol_error"] if isinstance(e, str)]
        assert len(errs) == row["usage_protocol_errors"]
        assert req["ok"].all()
    assert total == 10  # 5 of every 6 requests, over 12 requests
    every = " | ".join(e for row in summary.rows for e in load_requests(summary.run_dir, row["point_id"])
                       ["protocol_error"] if isinstance(e, str))
    for raw in ('"8"', "1e+300", '"abc"', "1e+30", "-2", "-4"):
        assert raw in every, (raw, every)
    table = pd.read_parquet(summary.run_dir / "points.parquet")
    assert table["usage_protocol_errors"].sum() == 10
    json.dumps(summary.rows, default=str)  # the rows are plain values (no 1e300 leaked into a count)
