"""bench.config.quant: THE quantization registry. Every name a sweep accepts runs the same way in the
sweep, the model dir, the vLLM command line and the planner, and calibration's key resolves again."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.config import quant
from bench.config.catalog import Hyperparameters
from bench.config.sweep import ServerSpec
from bench.engines.modeldir import hf_config
from bench.errors import UserInputError
from bench.planner.calibrate import points_from_results
from bench.planner.estimate import estimate
from bench.planner.roofline import (
    CalibratedEntry,
    Deployment,
    GpuPeaks,
    RooflineConfig,
    calibration_key,
    load_roofline_config,
    resolve_quant,
)

SWEEP_NAMES = sorted(quant.QUANTIZATIONS)
# Datasheet H200 (shared/reference/gpus.md), independent of hardware.yaml edits
H200 = GpuPeaks(id="h200", memory_gb=141, hbm_gb_s=4800, tflops_bf16=989, tflops_fp8=1979, tflops_int8=1979,
                interconnect_gb_s=450)


@pytest.mark.parametrize("name", [n for q in quant.QUANTIZATIONS.values() for n in (q.name, *q.aliases)])
def test_every_name_and_alias_is_accepted_by_a_sweep(name):
    spec = ServerSpec(model="glm-4.5-air-tiny", quantization=name)
    expected = quant.get(name).name
    assert spec.quantization == (None if expected == "none" else expected)


def test_unquantized_spellings_all_mean_none():
    for v in (None, "none", "bf16", "bfloat16", "", "NONE", float("nan")):
        assert quant.get(v).name == "none"
    assert ServerSpec(model="m", quantization=None).quantization is None


def test_unknown_names_fail_with_the_allowed_list():
    with pytest.raises(UserInputError, match="int8-w8a8-dense"):
        quant.get("int3")
    with pytest.raises(ValueError, match="quantization must be one of"):
        ServerSpec(model="m", quantization="int3")


def test_vllm_flags_by_hand():
    # checkpoint-carried INT8 is detected by vLLM; the others are named on the command line
    assert quant.vllm_quantization(None) is None
    assert quant.vllm_quantization("int8-w8a8") is None
    assert quant.vllm_quantization("int8-w8a8-dense") is None
    assert quant.vllm_quantization("fp8") == "fp8"
    assert quant.vllm_quantization("awq_marlin") == "awq_marlin"
    assert quant.vllm_quantization("compressed-tensors") == "compressed-tensors"


def test_compressed_tensors_means_the_same_everywhere():
    ct = quant.get("compressed-tensors")
    assert ct.vllm_quantization == "compressed-tensors"
    assert ct.checkpoint_config["quant_method"] == "compressed-tensors"
    assert ct.planner_preset == "int8"
    assert resolve_quant("compressed-tensors").name == "int8"
    df = pd.DataFrame([_row("compressed-tensors")])
    assert points_from_results(df)[0].quant == "int8"


def test_model_dir_config_comes_from_the_registry():
    from bench.config.catalog import get_model

    m = get_model("glm-4.5-air-tiny")
    assert "quantization_config" not in hf_config(m, None)
    assert "quantization_config" not in hf_config(m, "fp8")  # vLLM quantizes on the fly
    dense = hf_config(m, "int8-w8a8-dense")["quantization_config"]
    assert dense["quant_method"] == "compressed-tensors"
    assert "re:.*mlp\\.experts.*" in dense["ignore"]  # routed experts stay BF16
    assert hf_config(m, "awq")["quantization_config"]["bits"] == 4


def test_cpu_support_follows_the_vllm_cpu_notes():
    # shared/reference/vllm-cpu.md: INT8 W8A8 via compressed-tensors works; fp8, AWQ/GPTQ and fp8 KV do not
    assert quant.supports("int8-w8a8-dense", "cpu") and quant.supports(None, "cpu")
    assert not quant.supports("fp8", "cpu") and not quant.supports("awq", "cpu")
    assert quant.KV_CACHE_DTYPES["fp8"].devices == ("gpu",)


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_the_planner_estimates_every_sweep_quantization(name):
    est = estimate("glm-4.5-air", H200, 4, name, 1000, 200, [1, 8])  # BF16 ~199 GiB: 4 GPUs
    assert est.quant == quant.get(name).planner_preset
    assert est.memory.fits and len(est.curve) == 2


def test_kv_cache_dtypes_give_kv_bits():
    assert quant.kv_bits_of("auto") is None and quant.kv_bits_of(None) is None
    assert quant.kv_bits_of("fp8_e5m2") == 8


def _row(q, kv="auto"):
    return {"status": "ok", "model": "glm-4.5-air", "gpu_type": "h200", "quantization": q, "kv_cache_dtype": kv,
            "tensor_parallel_size": 1, "gpu_count": 1, "concurrency": 4, "completed": 10,
            "input_tokens": 10_000, "output_tokens": 2_000, "tpot_ms_p50": 20.0, "ttft_ms_p50": 300.0}


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_calibration_key_round_trips_for_every_sweep_quantization(name):
    p = points_from_results(pd.DataFrame([_row(name)]))[0]
    key = calibration_key(p.gpu, p.quant)
    # the key calibration would write is the key an estimate of the same sweep name reads back
    entry = CalibratedEntry(bandwidth_efficiency=0.5, compute_efficiency=0.4, step_overhead_ms=2.0, n_points=1,
                            rms_log_error=0.0)
    cfg = RooflineConfig(calibrated={key: entry})
    est = estimate("glm-4.5-air", H200, 1, name, 1000, 200, [1], cfg=cfg)
    assert est.efficiency_source == f"calibrated:{key}"
    assert est.efficiency["bandwidth_efficiency"] == 0.5


def test_fp8_kv_rows_calibrate_with_8_bit_kv():
    assert points_from_results(pd.DataFrame([_row("fp8", kv="fp8_e4m3")]))[0].kv_bits == 8


def test_int8_dense_keeps_routed_experts_at_16_bits():
    # toy MoE: hidden 100, 2 layers, q = 2 heads x 50 = 100, kv = 1 x 50, 4 routed experts of width 200
    #   attention/layer = 100*100 + 2*100*50 + 100*100 + 2*100 (norms) = 30,200
    #   expert = 3*100*200 = 60,000; router = 100*4 = 400; MoE layer = 4*60,000 + 400 = 240,400
    #   stack = 2*(30,200 + 240,400) = 541,200; routed = 2*4*60,000 = 480,000; rest = 61,200
    #   embeddings + LM head = 2 * 1000*100 = 200,000 params at 2 bytes = 400,000 B
    hp = Hyperparameters(hidden_size=100, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=50, vocab_size=1000, moe_intermediate_size=200, n_routed_experts=4,
                         num_experts_per_tok=1)
    cfg = load_roofline_config()

    def weight_bytes(q):
        return Deployment(hp=hp, gpu=H200, quant=resolve_quant(q, cfg=cfg)).weight_bytes_total()

    assert weight_bytes("int8-w8a8") == pytest.approx(541_200 + 400_000)  # 1 byte everywhere
    assert weight_bytes("int8-w8a8-dense") == pytest.approx(61_200 + 480_000 * 2 + 400_000)
    assert weight_bytes("none") == pytest.approx(541_200 * 2 + 400_000)


def test_presets_come_from_the_registry_and_yaml_can_override():
    cfg = RooflineConfig(quantizations={"fp8": {"kv_bits": 8}, "int2": {"weight_bits": 2.2}})
    assert cfg.quantizations["fp8"].kv_bits == 8 and cfg.quantizations["fp8"].weight_bits == 8
    assert cfg.quantizations["int2"].weight_bits == 2.2
    assert set(quant.PLANNER_PRESETS) <= set(RooflineConfig().quantizations)
