"""DP attention (KV per DP group, attention per DP share) and the single-wave burst model, by hand.

Goldens are hand arithmetic on a toy MLA model, the GLM-5 latent size from its config, and an
event-by-event simulation of one wave (an independent formula for burst_latencies_s)."""

import pytest

from bench.config.catalog import Hyperparameters, get_model
from bench.errors import UserInputError
from bench.planner.deployment import Deployment, memory_fit
from bench.planner.estimate import estimate
from bench.planner.factors import GpuPeaks, get_gpu, load_roofline_config, resolve_quant
from bench.planner.fit import prepare
from bench.planner.published import load_published_runs
from bench.planner.serving import burst_latencies_s, point_raw
from tests.unit.planner.test_roofline import BF16, IDEAL

# A dense MLA toy (no q_lora): per layer, by the catalog's MLA formula
#   q        h*H*(n+r)     = 1000*10*(50+10)  =   600,000
#   kv down  h*(r_kv+r)    = 1000*(90+10)     =   100,000
#   kv up    r_kv*H*(n+v)  = 90*10*(50+50)    =    90,000
#   kv norm  r_kv                             =        90
#   out      H*v*h         = 10*50*1000       =   500,000
#   norms    2h                               =     2,000   -> 1,292,090; x 10 layers = 12,920,900
# FFN 3*1000*4000 = 12,000,000 per layer -> 120,000,000; embeddings + LM head 2*10000*1000 = 20,000,000 (BF16)
# KV: one latent of (90 + 10) x 2 B per layer, on every GPU of an attention group: 10 x 100 x 2 = 2,000 B/token
MLA_TOY = Hyperparameters(hidden_size=1000, num_hidden_layers=10, num_attention_heads=10, num_key_value_heads=10,
                          head_dim=60, vocab_size=10000, intermediate_size=4000, attention="mla",
                          kv_lora_rank=90, qk_rope_head_dim=10, qk_nope_head_dim=50, v_head_dim=50)
# 1 GiB of HBM, 1000 GB/s, 100 TFLOPS, 100 GB/s link
GPU_1GIB = GpuPeaks(id="toy", memory_gb=1, hbm_gb_s=1000, tflops_bf16=100, tflops_fp8=100, interconnect_gb_s=100)


def mla(tp=4, dp=1):
    return Deployment(hp=MLA_TOY, gpu=GPU_1GIB, quant=BF16, tp=tp, eff=IDEAL, dp_attention=dp)


def test_mla_toy_counts_by_hand():
    assert mla().attention_params() == 12_920_900
    assert MLA_TOY.active_params() == 132_920_900
    assert mla().kv_bytes_per_token_per_gpu() == 2_000


def test_dp_attention_memory_fit_by_hand():
    # weights, bytes: (132,920,900 x 2) + 20,000,000 x 2 = 305,841,800
    #   TP4:        305,841,800 / 4                                   =  76,460,450 per GPU
    #   TP4 + DP4:  (305,841,800 - 25,841,800) / 4 + 25,841,800 / 1   =  95,841,800 (attention replicated)
    # KV budget = 1 GiB = 1,073,741,824 B - weights; 2,000 B per token on each GPU (MLA latent, not split)
    #   TP4: 997,281,374 // 2,000 = 498,640 tokens on every GPU = the replica's; 1000-token sequences: 498
    #   DP4: 977,900,024 // 2,000 = 488,950 tokens per GPU, each group its own sequences: 4 x 488 = 1,952
    tp = memory_fit(mla(4, 1), 1000)
    dp = memory_fit(mla(4, 4), 1000)
    assert tp.weights_gib_per_gpu * 2**30 == pytest.approx(76_460_450)
    assert dp.weights_gib_per_gpu * 2**30 == pytest.approx(95_841_800)
    assert (tp.kv_capacity_tokens, tp.max_concurrent_seqs) == (498_640, 498)
    assert (dp.kv_capacity_tokens, dp.max_concurrent_seqs) == (4 * 488_950, 1_952)


def test_glm5_latent_is_per_group_under_dp_attention():
    # GLM-5 (BF16 KV): MLA latent 78 x (512 + 64) x 2 = 89,856 B + DSA index keys 78 x (128 + 4) = 10,296 B
    # = 100,152 B per token on every GPU of an attention group, with or without DP attention ...
    hp = get_model("glm-5").hp
    quant = resolve_quant("fp8", kv_bits=16)
    gpu = get_gpu("h200")
    tp8 = Deployment(hp=hp, gpu=gpu, quant=quant, tp=8, ep=True, eff=IDEAL)
    dp8 = Deployment(hp=hp, gpu=gpu, quant=quant, tp=8, ep=True, eff=IDEAL, dp_attention=8)
    assert 78 * (512 + 64) * 2 == 89_856
    assert tp8.kv_bytes_per_token_per_gpu() == dp8.kv_bytes_per_token_per_gpu() == 89_856 + 78 * 132
    # ... but with DP 8 a GPU holds only its own group's sequences: 8 groups x its per-GPU capacity
    ctx = 8192 + 1024
    f_tp, f_dp = memory_fit(tp8, ctx), memory_fit(dp8, ctx)
    per_gpu_tokens = int(f_dp.kv_budget_gib_per_gpu * 2**30 // 100_152)
    assert f_dp.max_concurrent_seqs == 8 * (per_gpu_tokens // ctx)
    assert f_tp.max_concurrent_seqs == int(f_tp.kv_budget_gib_per_gpu * 2**30 // 100_152) // ctx
    assert f_dp.max_concurrent_seqs > 6 * f_tp.max_concurrent_seqs  # less budget (attention replicated), 8x groups


def test_dp_attention_decode_step_reads_its_share_by_hand():
    # flat curves, 1000 GB/s; B = 8 decodes at context 1000, TP4:
    #   FFN 120,000,000 x 2 / 4 = 60,000,000; attention 12,920,900 x 2 / 4 = 6,460,450; LM head 20,000,000 / 4
    #   = 5,000,000; KV: every GPU reads all 8 latents: 8 x 1000 x 2,000 = 16,000,000 -> 87,460,450 B = 87.46045 us
    # DP4: attention weights 25,841,800 (whole, per group); KV: 2 of the 8 sequences: 4,000,000 -> 94,841,800 B
    assert mla(4, 1).step_raw(8, 1000).memory_s == pytest.approx(87.46045e-6)
    assert mla(4, 4).step_raw(8, 1000).memory_s == pytest.approx(94.8418e-6)
    # FLOPs per GPU: the split work is the same (a group's tokens/4 on one GPU = tokens/4), but TP4 runs the
    # replicated MLA kv down-projection (h x (r_kv + rope) = 1000 x 100 x 10 layers = 1,000,000 params) over
    # all 8 tokens on every GPU, DP4 over its 2: 2 x 1e6 x (8 - 2) = 12e6 FLOPs more at 100 TFLOPS = 0.12 us
    dp4, tp4 = mla(4, 4).step_raw(8, 1000).compute_s, mla(4, 1).step_raw(8, 1000).compute_s
    assert tp4 - dp4 == pytest.approx(0.12e-6)


def test_dp_attention_comm_drops_the_attention_allreduce():
    # dense model, TP4: 2 all-reduces per layer; DP4 (groups of 1 GPU): only the FFN one -> exactly half
    assert mla(4, 4).comm_s(64) == pytest.approx(mla(4, 1).comm_s(64) / 2)


def test_dp_attention_must_divide_tp():
    with pytest.raises(ValueError, match="dp_attention"):
        mla(4, 3)
    with pytest.raises(UserInputError, match="dp_attention"):
        estimate(MLA_TOY, GPU_1GIB, 4, BF16, 100, 10, [1], dp_attention=3, efficiency=IDEAL)


def _simulate_wave(n: int, osl: int, tokens_per_step: int, w: float, d: float) -> tuple[float, float, float]:
    """One wave, step by step: wave step i prefills request i while every earlier request emits L tokens;
    then decode steps. Returns (mean TTFT, mean TPOT, duration)."""
    t, emitted, first, done = 0.0, [0] * n, [0.0] * n, [0.0] * n
    for i in range(n):
        t += w
        for j in range(i):
            emitted[j] += tokens_per_step
        first[i], emitted[i] = t, 1
    while any(e < osl for e in emitted):
        t += d
        for j in range(n):
            if emitted[j] < osl:
                emitted[j] = min(osl, emitted[j] + tokens_per_step)
                if emitted[j] == osl:
                    done[j] = t
    for j in range(n):
        done[j] = done[j] or first[j]
    tpots = [(done[j] - first[j]) / (osl - 1) for j in range(n)]
    return sum(first) / n, sum(tpots) / n, max(done)


def test_burst_by_hand_and_by_simulation():
    # N = 4 prompts at once, OSL 11, L = 1, wave step w = 0.5 s, decode step d = 0.1 s:
    #   duration = 4 x 0.5 + 10 x 0.1 = 3.0 s; mean TTFT = (4+1)/2 x 0.5 = 1.25 s;
    #   mean TPOT = 0.1 + 1.5 x (0.5 - 0.1) / 10 = 0.16 s; throughput = 4 x 11 / 3.0 tok/s
    lat = burst_latencies_s(4, 11, 1.0, 0.5, 0.1)
    assert (lat.served_e2el_s, lat.ttft_s, lat.tpot_s) == pytest.approx((3.0, 1.25, 0.16))
    assert _simulate_wave(4, 11, 1, 0.5, 0.1) == pytest.approx((1.25, 0.16, 3.0))
    # speculation: L = 2 tokens per step, OSL 21 (20 tokens after the first, a multiple of 2)
    lat = burst_latencies_s(3, 21, 2.0, 0.3, 0.05)
    ttft, tpot, dur = _simulate_wave(3, 21, 2, 0.3, 0.05)
    assert (lat.ttft_s, lat.tpot_s, lat.served_e2el_s) == pytest.approx((ttft, tpot, dur))


def test_burst_estimate_uses_the_wave_not_the_steady_state():
    # The toy on 1 GPU: a wave of 4 fits (max sequences >> 4); throughput = N x OSL / (N w + (OSL-1) d)
    dep = mla(1, 1)
    raw = point_raw(dep, 100, 11, 4, 10_000, burst=True)
    w = raw.wave.time_s(1.0, 1.0, 0.0)
    d = raw.decode.time_s(1.0, 1.0, 0.0)
    est = estimate(MLA_TOY, GPU_1GIB, 1, BF16, 100, 11, [4], efficiency=IDEAL, burst=True, method="closed-form")
    assert est.curve[0].output_tok_s == pytest.approx(4 * 11 / (4 * w + 10 * d))
    steady = estimate(MLA_TOY, GPU_1GIB, 1, BF16, 100, 11, [4], efficiency=IDEAL, method="closed-form")
    assert steady.curve[0].output_tok_s != pytest.approx(est.curve[0].output_tok_s)
    # a wave larger than the KV holds is not one wave: the steady state is kept
    assert point_raw(dep, 100, 11, 4, 3, burst=True).wave is None


def test_published_rows_carry_their_sources_setup():
    """The GLM-5.2 SGLang cell ran `--tp 8 --dp 8 --enable-dp-attention` (EP via deepep); the GLM-5 vLLM
    recipe ran TP 8 and a 32-prompt burst (num_prompts 32 <= concurrency 32); the rest are steady state."""
    runs = {r.id: r for r in load_published_runs()}
    glm52 = runs["glm-5.2-h200-dp8-ep8-mtp112-c64-8k1k"]
    assert (glm52.dp_attention, glm52.attention_groups(), glm52.single_wave()) == (True, 8, False)
    glm5 = runs["glm-5-h200-tp8-mtp3-8k1k-burst32"]
    assert (glm5.dp_attention, glm5.attention_groups(), glm5.single_wave()) == (False, 1, True)
    assert [r.id for r in runs.values() if r.single_wave()] == [glm5.id]
    cfg = load_roofline_config().model_copy(update={"fit": None, "calibrated": {}})
    assert prepare(glm52, cfg).mode() == "dp-attn 8"
    assert prepare(glm5, cfg).mode() == "burst"


def test_plan_cli_dp_attention_and_burst():
    from typer.testing import CliRunner

    from bench.cli.app import app

    bad = CliRunner().invoke(app, ["plan", "--model", "glm-5.2", "--gpu", "h200", "--count", "8", "--quant", "fp8",
                                   "--dp-attention", "3"])
    assert bad.exit_code == 2 and "dp_attention" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    ok = CliRunner().invoke(app, ["plan", "--model", "glm-5.2", "--gpu", "h200", "--count", "8", "--quant", "fp8",
                                  "--ep", "--dp-attention", "8", "--burst", "--concurrency", "32", "--json"])
    assert ok.exit_code == 0, ok.output
    import json
    est = json.loads(ok.output)["estimate"]
    assert (est["dp_attention"], est["burst"]) == (8, True)
    assert est["memory"]["max_concurrent_seqs"] % 8 == 0  # 8 groups, each its own whole sequences
