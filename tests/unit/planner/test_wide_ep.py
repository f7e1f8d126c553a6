"""Wide expert parallelism (bench.planner.deployment): the all-to-all bytes per step and its time over the
scale-up domain by hand, the dense parts held per attention group beyond one board, and the memory that
spreading the experts frees for KV, on a toy MoE model small enough to count by hand."""

from __future__ import annotations

import pytest

from bench.config.catalog import Hyperparameters
from bench.planner.roofline import Deployment, Efficiency, GpuPeaks, QuantSpec

# Toy MoE, counted by hand:
#   attention per layer = h*q + 2*h*kv + q*h + 2h = 1000*1000 + 2*1000*200 + 1000*1000 + 2000 = 2,402,000
#   2 dense layers of FFN 3*1000*4000 = 12,000,000; 8 MoE layers of 64 experts x 3*1000*500 = 96,000,000
#   + a router 1000*64 = 64,000; embeddings + LM head 2 x 10000 x 1000 = 20,000,000 (16 bits)
#   BF16 bytes: stack (24,020,000 + 24,000,000 + 768,512,000) x 2 = 1,633,064,000, + 40,000,000 = 1,673,064,000
#   routed experts 768,000,000 x 2 = 1,536,000,000 B; attention 24,020,000 x 2 = 48,040,000 B
MOE = Hyperparameters(hidden_size=1000, num_hidden_layers=10, num_attention_heads=10, num_key_value_heads=2,
                      head_dim=100, vocab_size=10000, intermediate_size=4000, moe_intermediate_size=500,
                      n_routed_experts=64, num_experts_per_tok=4, first_k_dense_replace=2)
BF16 = QuantSpec(name="bf16", weight_bits=16, kv_bits=16, compute="bf16")
BOARD = GpuPeaks(id="board", memory_gb=80, hbm_gb_s=1000, tflops_bf16=100, interconnect_gb_s=100)
RACK = BOARD.model_copy(update={"id": "rack", "scale_up_gpus": 72})
IDEAL = Efficiency(bandwidth_efficiency=1.0, compute_efficiency=1.0, interconnect_efficiency=1.0,
                   collective_latency_us=10.0, inter_node_latency_us=20.0, inter_node_gb_s=50.0,
                   step_overhead_ms=0.0, gpu_memory_utilization=1.0, reserve_gib=0.0)


def dep(tp: int, dp: int, ep: bool = True, gpu: GpuPeaks = RACK, dense_dp: bool | None = None) -> Deployment:
    return Deployment(hp=MOE, gpu=gpu, quant=BF16, tp=tp, ep=ep, eff=IDEAL, dp_attention=dp, dense_dp=dense_dp)


def test_toy_counts():
    d = dep(1, 1, ep=False)
    assert d.weight_bytes_total() == 1_673_064_000
    assert d.routed_expert_params() * 2 == 1_536_000_000


def test_all_to_all_bytes_per_step_by_hand():
    """EP 16 with DP attention 16, 160 tokens in the step = 10 per GPU. One direction of one MoE layer:
    10 x 1000 hidden x 2 B x top-4 x 15/16 leaving the GPU = 75,000 B; a step = 8 MoE layers x (dispatch +
    combine) = 1,200,000 B. Without EP nothing is all-to-all."""
    d = dep(16, 16)
    assert d.all_to_all_bytes(160) == pytest.approx(75_000)
    assert d.all_to_all_bytes_per_step(160) == pytest.approx(1_200_000)
    assert dep(16, 16, ep=False).all_to_all_bytes_per_step(160) == 0.0
    # EP 72: 720 tokens, 10 per GPU, 71/72 leave: 10 x 1000 x 2 x 4 x 71/72 x 2 x 8
    assert dep(72, 72).all_to_all_bytes_per_step(720) == pytest.approx(80_000 * 71 / 72 * 16)


def test_all_to_all_time_over_the_scale_up_domain_by_hand():
    """Same step: attention groups of one GPU (no attention all-reduce) and dense layers per group (none either),
    so communication = 8 MoE layers x 2 x (75,000 B / 100 GB/s + latency 10 us x log2(16)) = 8 x 2 x (0.75 +
    40) us = 652 us inside a 72-GPU NVLink domain. On 8-GPU boards the 16 GPUs cross the scale-out network:
    min(100, 50) GB/s and + 20 us: 8 x 2 x (1.5 + 60) us = 984 us."""
    assert dep(16, 16).comm_s(160) == pytest.approx(652e-6)
    assert dep(16, 16, gpu=BOARD).comm_s(160) == pytest.approx(984e-6)


def test_dense_parts_go_data_parallel_only_beyond_one_board():
    assert dep(16, 16).dense_data_parallel
    assert not dep(8, 8).dense_data_parallel  # SGLang's --enable-dp-attention default: dense split over tp
    assert not dep(16, 1).dense_data_parallel
    assert not dep(16, 16, ep=False).dense_data_parallel
    assert not dep(16, 16, dense_dp=False).dense_data_parallel
    assert dep(8, 8, dense_dp=True).dense_data_parallel


def test_spreading_experts_frees_memory_for_kv_by_hand():
    """Per GPU, EP 8 / DP 8 (dense split over 8, attention per GPU): (1,673,064,000 - 48,040,000) / 8 +
    48,040,000 = 251,168,000 B. Wide EP 16 (everything but the experts per GPU, experts / 16):
    (1,673,064,000 - 1,536,000,000) + 1,536,000,000 / 16 = 233,064,000 B: 18,104,000 B more for KV."""
    gib = 2**30
    assert dep(8, 8).weight_gib_per_gpu() * gib == pytest.approx(251_168_000)
    assert dep(16, 16).weight_gib_per_gpu() * gib == pytest.approx(233_064_000)
    assert dep(72, 72).weight_gib_per_gpu() * gib == pytest.approx(137_064_000 + 1_536_000_000 / 72)
    from bench.planner.roofline import memory_fit

    kv8, kv16 = memory_fit(dep(8, 8), 1000), memory_fit(dep(16, 16), 1000)
    assert (kv16.kv_budget_gib_per_gpu - kv8.kv_budget_gib_per_gpu) * gib == pytest.approx(18_104_000)


def test_wide_ep_streams_the_dense_parts_per_group():
    """A decode step of 16 sequences at EP 16 / DP 16 reads, per GPU, the dense FFN layers whole (they are its
    group's own): 24,000,000 params x 2 B = 48 MB at 1000 GB/s = 48 us of the step, where dense over 16 GPUs
    reads 1/16 of it."""
    wide, split = dep(16, 16).step_raw(16, 100.0), dep(16, 16, dense_dp=False).step_raw(16, 100.0)
    # always-used params: dense FFN 24,000,000 + routers 512,000; LM head 10,000,000 (all BF16)
    extra_s = (24_512_000 + 10_000_000) * 2 * (1 - 1 / 16) / 1000e9
    assert wide.memory_s - split.memory_s == pytest.approx(extra_s, rel=1e-6)
