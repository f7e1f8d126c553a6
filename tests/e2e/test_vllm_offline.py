"""Offline max-throughput mode on the real engine: one LLM.generate batch in a child process."""

from __future__ import annotations

import pytest

from bench.config.sweep import Sweep
from bench.econ.row_cost import ROW_PRICING
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = pytest.mark.e2e

N, ISL, OSL = 8, 32, 16


def test_offline_batch_counts_tokens_and_has_no_latencies(tmp_path):
    pytest.importorskip("vllm")
    sweep = Sweep(
        name="offline",
        engine={"kind": "vllm-offline", "startup_timeout_s": 600},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.10},
        server={"model": "glm-4.5-tiny", "max_num_seqs": 8},
        load={"concurrency": [N], "num_requests": N, "warmup_requests": 2},
        workloads=[{"name": "w", "input_len": ISL, "output_len": OSL}],
    )
    df = load_results(run_sweep(sweep, out_root=tmp_path, pricing=ROW_PRICING).run_dir)
    row = df.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["completed"] == N
    assert row["output_tokens"] == N * OSL  # ignore_eos + min_tokens pin the length
    assert row["input_tokens"] == N * ISL  # word-level tokenizer: one word, one token, no BOS
    assert row["output_tok_s"] == pytest.approx(N * OSL / row["duration_s"])
    assert row["usd_per_m_output"] == pytest.approx(0.10 / (row["output_tok_s_per_gpu"] * 3600 / 1e6))
    assert row["ttft_ms_p50"] is None or row["ttft_ms_p50"] != row["ttft_ms_p50"]  # None/NaN: not measured


def test_offline_rejects_several_load_points():
    with pytest.raises(ValueError, match="vllm-offline submits one batch"):
        Sweep(name="x", engine={"kind": "vllm-offline"}, server={"model": "glm-4.5-tiny"},
              load={"concurrency": [1, 4]})
