"""Per-rank work TP does not split (replicated MLA down-projection and DSA indexer, sparse head padding) and
the routed-expert GEMM curve, by hand (bench.planner.rank_work, Curves.expert_gemm_fraction).

Goldens are hand arithmetic on a toy DSA model and GLM-5's config (configs/models/glm-5.yaml)."""

import pytest

from bench.config.catalog import Hyperparameters, get_model
from bench.planner.deployment import Deployment
from bench.planner.efficiency import Curves
from bench.planner.factors import GpuPeaks
from bench.planner.rank_work import (
    indexer_score_flops,
    replicated_down_params_per_layer,
    replicated_params,
    sparse_head_factor,
)
from tests.unit.planner.test_roofline import BF16, IDEAL, TOY

# A toy MLA + DSA model: h 100, 2 layers, 8 heads, q_lora 20, kv_lora 10, rope 2, indexer 2 heads x 4 dims
#   down-projection per layer  h x (q_lora + kv_lora + rope) = 100 x (20 + 10 + 2) = 3,200
#   indexer per layer          q_lora x I x D + h x D + h x I + 2D = 20x2x4 + 100x4 + 100x2 + 8 = 768
#   replicated, all layers     2 x 3,200 + 2 x 768 = 7,936
#   index score per (query, key) pair: 2 x I x D x indexer layers = 2 x 2 x 4 x 2 = 32 FLOPs
#   absorbed sparse attention per layer-token: 2H(kv_lora + rope) + 2H kv_lora = 2x8x12 + 2x8x10 = 352
DSA_TOY = Hyperparameters(hidden_size=100, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=8,
                          head_dim=2, vocab_size=1000, intermediate_size=400, attention="mla+dsa",
                          q_lora_rank=20, kv_lora_rank=10, qk_rope_head_dim=2, qk_nope_head_dim=4, v_head_dim=4,
                          index_n_heads=2, index_head_dim=4, index_topk=16)
# 1 TFLOPS in every precision, so FLOPs read directly as picoseconds
GPU_1TF = GpuPeaks(id="toy1tf", memory_gb=80, hbm_gb_s=1000, tflops_bf16=1, tflops_fp8=1, interconnect_gb_s=100)


def test_replicated_counts_by_hand():
    assert replicated_down_params_per_layer(DSA_TOY) == 3_200
    assert DSA_TOY.indexer_params_per_layer() == 768
    assert replicated_params(DSA_TOY) == 7_936
    # prefill of 10 tokens: 10^2/2 = 50 causal pairs x 32 = 1,600; plus 3 decoding queries at context 20:
    # 3 x 20 x 32 = 1,920
    assert indexer_score_flops(DSA_TOY, 0, 0, 10) == pytest.approx(1_600)
    assert indexer_score_flops(DSA_TOY, 3, 20, 10) == pytest.approx(3_520)


def test_gqa_models_replicate_nothing():
    assert replicated_params(TOY) == 0
    assert indexer_score_flops(TOY, 3, 20, 10) == 0
    assert sparse_head_factor(TOY, 8, 64) == 1.0


def test_sparse_head_padding_by_hand():
    # 8 heads: TP8 -> 1 head/rank padded to 64 = 64x; TP1 -> 8 heads padded to 64 = 8x; never below 1x
    assert sparse_head_factor(DSA_TOY, 8, 64) == 64
    assert sparse_head_factor(DSA_TOY, 1, 64) == 8
    assert sparse_head_factor(DSA_TOY, 1, 4) == 1.0
    # GLM-5 TP8: 64/8 = 8 heads per rank -> 64 = 8x its share; DP attention (one GPU per group): 64 heads, 1x
    glm5 = get_model("glm-5").hp
    assert sparse_head_factor(glm5, 8, 64) == 8 and sparse_head_factor(glm5, 1, 64) == 1


def test_glm5_replicated_work_by_hand():
    hp = get_model("glm-5").hp
    # fused q_a + kv_a: 6144 x (2048 + 512 + 64) = 16,121,856 per layer (the probe's 6144 -> 2624 projection)
    assert replicated_down_params_per_layer(hp) == 6144 * 2624 == 16_121_856
    # indexer: 2048 x 32 x 128 + 6144 x 128 + 6144 x 32 + 256 = 8,388,608 + 786,432 + 196,608 + 256 = 9,371,904
    assert hp.indexer_params_per_layer() == 9_371_904
    assert replicated_params(hp) == 78 * (16_121_856 + 9_371_904)
    # 8k prefill scores on every rank: 2 x 32 x 128 x 78 layers = 638,976 per pair x 8192^2/2 = 33,554,432 pairs
    assert indexer_score_flops(hp, 0, 0, 8192) == pytest.approx(638_976 * 33_554_432)
    # GLM-5.2: indexers in 21 of the 78 layers only
    assert indexer_score_flops(get_model("glm-5.2").hp, 0, 0, 8192) == pytest.approx(2 * 32 * 128 * 21 * 33_554_432)


def _dsa(tp, min_heads, dp=1):
    eff = IDEAL.model_copy(update={"sparse_mla_min_heads": min_heads})
    return Deployment(hp=DSA_TOY, gpu=GPU_1TF, quant=BF16, tp=tp, eff=eff, dp_attention=dp)


def test_step_compute_splits_all_but_the_replicated_work():
    # 10-token prefill, flat curves at 1 TFLOPS: replicated GEMMs R = 2 x 7,936 x 10 = 158,720 and index
    # scores I = 1,600 run whole on every rank; sparse attention A = 352 x 2 layers x 50 pairs = 35,200.
    # With min heads 4: TP1 / TP2 (8 / 4 heads) are unpadded, TP4 (2 heads) runs 4 = 2x.
    #   C(tp) = (C1 - R - I - A)/tp + R + I + A x pad/tp
    #   C(2) = C1/2 + (R + I)/2                    = C1/2 + 80,160 ps
    #   C(4) = C1/4 + (R + I) x 3/4 + A x (2-1)/4  = C1/4 + 120,240 + 8,800 = C1/4 + 129,040 ps
    c1 = _dsa(1, 4).step_raw(0, 0, n_pre=10).compute_s
    assert _dsa(2, 4).step_raw(0, 0, n_pre=10).compute_s == pytest.approx(c1 / 2 + 80_160e-12)
    assert _dsa(4, 4).step_raw(0, 0, n_pre=10).compute_s == pytest.approx(c1 / 4 + 129_040e-12)
    # DP attention 4 over tp 4 (one GPU per group): each GPU runs its group's tokens/4 (= the split share)
    # with all 8 heads (unpadded) -> C1/4 exactly
    assert _dsa(4, 4, dp=4).step_raw(0, 0, n_pre=10).compute_s == pytest.approx(c1 / 4)


EXPERTS = Curves(hbm_gb_s=1000, dense_bw=[(1, 1.0)], expert_bw=[(1, 1.0)], attention_bw_max=1.0,
                 attention_latency_us=0.0, gemm_max={"bf16": 0.8}, gemm_half_tokens=0,
                 expert_gemm={"bf16": {256: [(64, 0.2), (256, 0.4)], 2048: [(64, 0.3), (256, 0.6)]}})


def test_expert_gemm_curve_by_hand():
    # 128 tokens/expert is halfway in log2 between 64 and 256: width 256 -> 0.3, width 2048 -> 0.45
    assert EXPERTS.expert_gemm_fraction("bf16", 128, 256, 1e4) == pytest.approx(0.3)
    assert EXPERTS.expert_gemm_fraction("bf16", 128, 2048, 1e4) == pytest.approx(0.45)
    # width 512 is 1/3 of the way from 256 (2^8) to 2048 (2^11) in log2: 0.3 + (0.45 - 0.3)/3 = 0.35
    assert EXPERTS.expert_gemm_fraction("bf16", 128, 512, 1e4) == pytest.approx(0.35)
    # flat outside the measured tokens and widths
    assert EXPERTS.expert_gemm_fraction("bf16", 16, 128, 1e4) == pytest.approx(0.2)
    assert EXPERTS.expert_gemm_fraction("bf16", 4096, 8192, 1e4) == pytest.approx(0.6)
    # fp8 / fp4 without points of their own fall back to the bf16 points
    assert EXPERTS.expert_gemm_fraction("fp8", 128, 256, 1e4) == pytest.approx(0.3)
    assert EXPERTS.expert_gemm_fraction("fp4", 128, 256, 1e4) == pytest.approx(0.3)
    # no expert points at all: the dense GEMM curve (0.8 here)
    assert Curves.flat().expert_gemm_fraction("bf16", 128, 256, 1e4) == 1.0
    assert EXPERTS.model_copy(update={"expert_gemm": {}}).expert_gemm_fraction("bf16", 128, 256, 1e4) == 0.8


def test_expert_gemm_curve_slows_only_the_routed_experts():
    # MoE toy: h 1000, 4 experts of width 400, top-2, 2 MoE layers; 256-token prefill at TP1:
    #   tokens per expert = 256 x 2 / 4 = 128; width 400 (TP1)
    #   routed FLOPs = 2 x (2 layers x 2 experts x 3 x 1000 x 400) x 256 = 2,457,600,000
    # flat curves run them at 1.0 of 1 TFLOPS; a constant 0.5 expert curve doubles their time: + 2.4576 ms
    moe = TOY.model_copy(update={"num_hidden_layers": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                 "moe_intermediate_size": 400, "first_k_dense_replace": 0})
    half = Curves.flat().model_copy(update={"expert_gemm": {"bf16": {400: [(1, 0.5)]}}})
    flat = Deployment(hp=moe, gpu=GPU_1TF, quant=BF16, eff=IDEAL)
    slow = Deployment(hp=moe, gpu=GPU_1TF, quant=BF16, eff=IDEAL.model_copy(update={"curves": half}))
    d = slow.step_raw(0, 0, n_pre=256).compute_s - flat.step_raw(0, 0, n_pre=256).compute_s
    assert d == pytest.approx(2_457_600_000e-12)
