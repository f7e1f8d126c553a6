"""Issue 25, item 3, `openai` engine: an endpoint must serve the model the sweep asks for (its GET /models lists
it, or its GET /models/<id> answers that id) or the points fail with a clear reason before any request is sent."""

from __future__ import annotations

import json

from aiohttp import web
from fake_endpoint import serve
from test_secrets import KEY, forms

from bench.config.sweep import Sweep
from bench.engines.openai import models_url
from bench.sim import SimConfig, run_sim_in_thread
from bench.sweep.run import run_sweep


def _sweep(url: str, **engine: object) -> Sweep:
    return Sweep(name="ident", engine={"kind": "openai", "base_url": url, **engine},
                 hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, server={"model": "glm-4.5-tiny"},
                 load={"concurrency": [1, 2], "num_requests": 2, "warmup_requests": 0, "cooldown": False},
                 workloads=[{"name": "w", "input_len": 8, "output_len": 4}])


def test_models_url_sits_beside_the_completions_route():
    assert models_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/models"
    assert models_url("http://gw/vllm-a/") == "http://gw/vllm-a/v1/models"
    assert models_url("https://open.bigmodel.cn/api/paas/v4") == "https://open.bigmodel.cn/api/paas/v4/models"
    assert models_url("https://x.example/v1beta/openai") == "https://x.example/v1beta/openai/models"


def test_an_endpoint_serving_another_model_fails_every_point_before_any_request(tmp_path):
    posts: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            posts.append(request.path)
            return web.Response(status=500)
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "other-model"}, {"id": "third"}]})
        return web.Response(status=404)  # no retrieve-model route, like vLLM

    with serve(handle) as url:
        summary = run_sweep(_sweep(url), out_root=tmp_path)
    assert posts == []  # nothing was measured
    assert summary.points_failed == 2
    for row in summary.rows:
        assert row["status"] == "failed"
        assert "does not serve model 'glm-4.5-tiny'" in row["error"], row["error"]
        assert "lists 'other-model', 'third'" in row["error"]


def test_a_models_route_that_echoes_the_key_is_reported_masked(tmp_path, monkeypatch):
    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = {"error": {"message": "invalid api key", "echo": forms(token)}}
        return web.Response(status=401, text=json.dumps(body), content_type="application/json")

    monkeypatch.setenv("MAAS_TEST_KEY", KEY)
    with serve(handle) as url:
        summary = run_sweep(_sweep(url, api_key_env="MAAS_TEST_KEY"), out_root=tmp_path)
    row = summary.rows[0]
    assert row["status"] == "failed" and "answered HTTP 401" in row["error"], row["error"]
    assert "***" in row["error"]
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.json"))
    assert not [name for name, f in forms(KEY).items() if f in row["error"] or f in written]


def test_the_simulator_serves_any_model_name_through_retrieve_model(tmp_path):
    # its /v1/models lists "sim-model"; the sweep asks for glm-4.5-tiny, which it also serves
    with run_sim_in_thread(SimConfig(ttft_ms=1, itl_ms=1)) as url:
        summary = run_sweep(_sweep(url), out_root=tmp_path)
    assert summary.points_failed == 0 and [r["completed"] for r in summary.rows] == [2, 2]
