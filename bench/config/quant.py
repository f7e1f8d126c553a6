"""THE quantization registry: every name a sweep, the engine, a model dir or the planner may use.

Why one table: a quantization used to be spelled in four places (sweep validation, the vLLM flag
list, the model-dir quantization_config map and two planner alias maps), and they drifted: a sweep
could run `int8-w8a8-dense` that the planner could not estimate, and calibration wrote keys the
planner rejected. Here each quantization says, once:

- `name` (what a sweep file and a results row carry) and `aliases` (accepted spellings);
- how vLLM runs it: `vllm_quantization` (the `--quantization` value, None = not passed because the
  checkpoint's own quantization_config is detected) and `checkpoint_config` (the quantization_config
  written into config.json when a catalog model is materialized with dummy weights);
- what the planner assumes: `planner_preset`, a key of PLANNER_PRESETS (weight / activation / KV bits
  and the tensor peak the GEMMs run at). The preset name is also the calibration key's quant part;
- where it runs: `devices` ("cpu" per shared/reference/vllm-cpu.md, "gpu").

Planner-only presets (int4, fp4, fp8-kv8, ...) resolve in the planner but are not sweep names: they
describe hardware the CPU harness cannot run, or a generic class (int4 = AWQ/GPTQ W4A16).
This module holds data only; it starts nothing and writes no file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import UserInputError

Device = Literal["cpu", "gpu"]
Compute = Literal["bf16", "fp8", "int8", "fp4"]

# --- planner presets (bits) -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlannerPreset:
    """Bits per element the roofline assumes and the tensor peak its GEMMs use.

    `routed_expert_bits` (None = `weight_bits`) covers partial quantizations that keep the routed
    experts in BF16 (int8-w8a8-dense); those experts' GEMMs then run at the BF16 peak.
    """

    name: str
    weight_bits: float
    activation_bits: int
    kv_bits: float
    compute: Compute
    routed_expert_bits: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
             "kv_bits": self.kv_bits, "compute": self.compute}
        if self.routed_expert_bits is not None:
            d["routed_expert_bits"] = self.routed_expert_bits
        return d


PLANNER_PRESETS: dict[str, PlannerPreset] = {p.name: p for p in (
    PlannerPreset("bf16", 16, 16, 16, "bf16", note="unquantized BF16 weights, activations and KV"),
    PlannerPreset("fp8", 8, 8, 16, "fp8",
                  note="W8A8 FP8 (block-128 scales ~0.03 bit/weight, ignored); kv_cache_dtype=auto keeps BF16 KV"),
    PlannerPreset("fp8-kv8", 8, 8, 8, "fp8", note="FP8 weights/activations plus --kv-cache-dtype fp8"),
    PlannerPreset("int8", 8, 8, 16, "int8", note="W8A8 INT8 (vLLM int8-w8a8 / compressed-tensors)"),
    PlannerPreset("int8-dense", 8, 8, 16, "int8", routed_expert_bits=16,
                  note="W8A8 INT8 on attention, dense FFNs and shared experts; routed experts and router BF16"),
    PlannerPreset("int4", 4.16, 16, 16, "bf16",
                  note="W4A16 AWQ/GPTQ, group 128: fp16 scale + 4-bit zero per group -> +0.16 bit/weight"),
    PlannerPreset("fp4", 4.5, 4, 16, "fp4", note="NVFP4 W4A4: fp8 scale per 16 weights -> 4.5 bit/weight"),
)}

# --- checkpoint quantization_configs (the data model dirs write into config.json) -----------------

INT8_W8A8_CONFIG: dict[str, Any] = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {
                "num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True,
            },
        }
    },
    "ignore": ["lm_head"],
}
# vLLM's CPU build has no INT8 MoE kernel ("No Int8 MoE backend supports the deployment
# configuration"), so on a MoE model the all-linear INT8 config fails there. The `-dense` variant
# quantizes attention, dense FFNs and shared experts and keeps the routed experts and router in
# BF16: a partial INT8 deployment that the CPU build can serve.
INT8_W8A8_DENSE_CONFIG: dict[str, Any] = {
    **INT8_W8A8_CONFIG, "ignore": ["lm_head", "re:.*mlp\\.experts.*", "re:.*mlp\\.gate$"],
}
AWQ_CONFIG: dict[str, Any] = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                              "version": "gemm"}
GPTQ_CONFIG: dict[str, Any] = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False,
                               "sym": True}

# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """One sweep-accepted quantization (see the module docstring for each field's role)."""

    name: str
    planner_preset: str
    aliases: tuple[str, ...] = ()
    vllm_quantization: str | None = None
    checkpoint_config: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    devices: tuple[Device, ...] = ("gpu",)
    note: str = ""

    @property
    def row_value(self) -> str:
        """What a results row's `quantization` column holds ("none" for unquantized)."""
        return self.name

    @property
    def preset(self) -> PlannerPreset:
        return PLANNER_PRESETS[self.planner_preset]


NONE = "none"
QUANTIZATIONS: dict[str, Quantization] = {q.name: q for q in (
    Quantization(NONE, "bf16", aliases=("bf16", "bfloat16", ""), devices=("cpu", "gpu"),
                 note="unquantized; the sweep's dtype applies"),
    Quantization("fp8", "fp8", vllm_quantization="fp8",
                 note="vLLM quantizes BF16 weights to FP8 on the fly; no CPU kernel"),
    Quantization("int8-w8a8", "int8", aliases=("w8a8",), checkpoint_config=INT8_W8A8_CONFIG,
                 devices=("cpu", "gpu"),
                 note="compressed-tensors W8A8 INT8 in config.json; vLLM detects it (no flag). "
                      "MoE models fail on CPU (no INT8 MoE kernel): use int8-w8a8-dense there"),
    Quantization("int8-w8a8-dense", "int8-dense", checkpoint_config=INT8_W8A8_DENSE_CONFIG,
                 devices=("cpu", "gpu"), note="INT8 W8A8 except routed experts and router (BF16)"),
    Quantization("compressed-tensors", "int8", vllm_quantization="compressed-tensors",
                 checkpoint_config=INT8_W8A8_CONFIG, devices=("cpu", "gpu"),
                 note="the compressed-tensors format named explicitly; the dummy checkpoint is W8A8 INT8, "
                      "so it means int8-w8a8 with --quantization compressed-tensors"),
    Quantization("awq", "int4", vllm_quantization="awq", checkpoint_config=AWQ_CONFIG,
                 note="4-bit AWQ (W4A16); CPU AVX2 build lacks cpu_gemm_wna16"),
    Quantization("awq_marlin", "int4", vllm_quantization="awq_marlin", checkpoint_config=AWQ_CONFIG,
                 note="AWQ checkpoint on the Marlin kernel (GPU only)"),
    Quantization("gptq", "int4", vllm_quantization="gptq", checkpoint_config=GPTQ_CONFIG,
                 note="4-bit GPTQ (W4A16)"),
    Quantization("gptq_marlin", "int4", vllm_quantization="gptq_marlin", checkpoint_config=GPTQ_CONFIG,
                 note="GPTQ checkpoint on the Marlin kernel (GPU only)"),
)}

_BY_ALIAS: dict[str, Quantization] = {
    alias: q for q in QUANTIZATIONS.values() for alias in (q.name, *q.aliases)
}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def lookup(name: str | None) -> Quantization | None:
    """The registry entry for a name or alias (None / NaN / "" / "none" -> unquantized); None if unknown."""
    if _blank(name):
        return QUANTIZATIONS[NONE]
    return _BY_ALIAS.get(str(name).strip().lower())


def get(name: str | None) -> Quantization:
    """Like `lookup`, but an unknown name is a UserInputError listing the accepted names."""
    q = lookup(name)
    if q is None:
        raise UserInputError(f"quantization: unknown {name!r}; allowed: {', '.join(QUANTIZATIONS)}")
    return q


def normalize(name: str | None) -> str | None:
    """The sweep form: canonical name, or None for unquantized (ServerSpec.quantization keeps None)."""
    q = get(name)
    return None if q.name == NONE else q.name


def vllm_quantization(name: str | None) -> str | None:
    """The value for vLLM's `--quantization` (or `LLM(quantization=...)`), None when not passed."""
    return get(name).vllm_quantization


def checkpoint_config(name: str | None) -> dict[str, Any] | None:
    """The quantization_config a dummy-weights model dir carries in config.json, if any."""
    return get(name).checkpoint_config


def planner_preset_name(name: str | None) -> str | None:
    """The planner preset for a sweep name / alias / preset name; None when nothing matches.

    Preset names (bf16, int4, fp4, ...) are accepted as themselves, so the key calibration writes
    (`<gpu>/<preset>`) resolves again.
    """
    if not _blank(name) and str(name).strip().lower() in PLANNER_PRESETS:
        return str(name).strip().lower()
    q = lookup(name)
    if q is not None:
        return q.planner_preset
    return {"nvfp4": "fp4"}.get(str(name).strip().lower())


def supports(name: str | None, device: Device) -> bool:
    return device in get(name).devices


# --- KV-cache dtypes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvCacheDtype:
    """A `--kv-cache-dtype` value and the bits per KV element the planner uses."""

    name: str
    kv_bits: float | None  # None = the model dtype (16 for BF16/FP16)
    devices: tuple[Device, ...]


KV_CACHE_DTYPES: dict[str, KvCacheDtype] = {k.name: k for k in (
    KvCacheDtype("auto", None, ("cpu", "gpu")),
    KvCacheDtype("fp8", 8, ("gpu",)),  # CPU needs AVX-512/AMX (shared/reference/vllm-cpu.md)
    KvCacheDtype("fp8_e4m3", 8, ("gpu",)),
    KvCacheDtype("fp8_e5m2", 8, ("gpu",)),
)}


def kv_bits_of(kv_cache_dtype: str | None) -> float | None:
    """Planner KV bits for a row's kv_cache_dtype (None = keep the preset's)."""
    if _blank(kv_cache_dtype):
        return None
    k = KV_CACHE_DTYPES.get(str(kv_cache_dtype))
    return k.kv_bits if k is not None else None
