"""Analytical roofline: the configuration, GPU peaks and formulas behind every planner estimate.

Why: the MaaS team must price GLM-4.6 on 8xH200 or MiniMax-M2 on 4xH100 before renting them. This
module turns the catalog's real hyperparameters (bench.config.catalog) and the GPU peaks
(configs/hardware.yaml) into memory fit, TTFT, TPOT and tokens/s/GPU, and corrects itself with
efficiency factors fitted from measured runs (configs/roofline.yaml). Every result carries
`source: "estimate"`, so a report never confuses it with a measurement.

Modules: this one holds the factors, the formulas and the memory fit; bench.planner.estimate turns
them into a throughput-latency curve and a plan (with money); bench.planner.calibrate fits the
factors from measured runs. Quantization presets (bits) come from THE registry, bench.config.quant.

The model (stated once, here; units in every name):

- Weights: the decoder stack (attention, dense FFNs, experts, routers, norms) at the preset's
  `weight_bits`; embeddings and LM head at 16 bits. Multi-token-prediction layers are not loaded
  (no speculative decoding). Tensor parallelism (TP) and expert parallelism (EP) both split the
  weights evenly over the `tp` GPUs of a replica; `count / tp` replicas serve independently.
- Memory fit per GPU: memory_gb (datasheet "GB" ~ GiB: an H100 reports 79.6 GiB) x
  gpu_memory_utilization - weights - reserve_gib = KV budget. KV bytes/token/GPU =
  kv_bytes_per_token(kv_bits/8) x max(kv_heads/tp, 1)/kv_heads (KV heads replicate when tp > kv
  heads). Max concurrent sequences = floor(budget / (KV per token x (ISL + OSL))).
- One engine step that decodes `n_dec` sequences at mean context `ctx` and prefills `n_pre`
  prompt tokens moves: the always-used weights (attention, dense FFNs, shared experts, routers,
  LM head) + the routed experts it touches + the KV it reads. With top-k of E experts and T
  tokens in the step, a MoE layer touches E * (1 - (1 - k/E)^T) distinct experts in expectation.
  FLOPs: 2 x active params per token (GEMMs, at the preset's tensor peak) + attention
  4 x heads x head_dim x context per token per layer (BF16 peak; causal prefill averages ISL/2)
  + 2 x hidden x vocab for each token whose logits are computed (decodes and the last prompt token).
  Time = max(bytes / (HBM x bandwidth_efficiency), FLOPs / (peak x compute_efficiency))
  + communication + step_overhead_ms.
- Communication per layer: two ring all-reduces of tokens x hidden x 2 bytes:
  2 (tp-1)/tp x bytes / (link x interconnect_efficiency) + collective_latency_us each; with EP the
  MoE one becomes an all-to-all dispatch + combine of k copies. A TP group larger than a node
  uses `inter_node_gb_s`.
- Serving at closed-loop concurrency C (split evenly over replicas; B = min(C per replica, max
  sequences)): TPOT = step(B decodes) + (B-1)/OSL x marginal prefill time of one prompt (the other
  requests' prefills interleave with my decode steps; chunked prefill); TTFT = one step that
  prefills ISL tokens next to B-1 decodes, plus queueing when C exceeds B (Little's law:
  wait = (C/B - 1) x E2EL). E2EL = TTFT + (OSL - 1) x TPOT; output tok/s/GPU = B x OSL / E2EL / tp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationError, model_validator

from bench.config import base
from bench.config import quant as quant_registry
from bench.config.base import StrictModel, load_config
from bench.config.catalog import Hyperparameters
from bench.config.hardware import GpuSpec, load_hardware
from bench.errors import UserInputError

ROOFLINE_CONFIG = base.CONFIG_DIR / "roofline.yaml"
GIB = 2.0**30
ACT_BYTES = 2.0  # activations and collectives travel in BF16 in every preset
# Which tensor peak a GEMM uses, and what it falls back to on a GPU without that precision
# (e.g. FP8 weights on A100 or Ascend 910B run as W8A16 on the BF16 units).
_COMPUTE_FALLBACK = {"fp4": ("fp4", "fp8", "bf16"), "fp8": ("fp8", "bf16"), "int8": ("int8", "bf16"),
                     "bf16": ("bf16",)}



# --- configuration ------------------------------------------------------------------------------


class QuantSpec(StrictModel):
    """Bits per weight / activation / KV element and which tensor peak the GEMMs use."""

    name: str = "custom"
    weight_bits: float = Field(gt=0, le=32)
    activation_bits: int = Field(16, gt=0, le=32)
    kv_bits: float = Field(16, gt=0, le=32)
    compute: Literal["bf16", "fp8", "int8", "fp4"] = "bf16"
    routed_expert_bits: float | None = Field(None, gt=0, le=32, description="None = weight_bits")

    @property
    def expert_bits(self) -> float:
        """Bits per routed-expert weight (BF16 in partial INT8 deployments, else weight_bits)."""
        return self.routed_expert_bits if self.routed_expert_bits is not None else self.weight_bits


class Efficiency(StrictModel):
    """Achieved fractions of datasheet peaks and fixed costs; see configs/roofline.yaml."""

    bandwidth_efficiency: float = Field(0.8, gt=0, le=1)
    compute_efficiency: float = Field(0.5, gt=0, le=1)
    interconnect_efficiency: float = Field(0.7, gt=0, le=1)
    collective_latency_us: float = Field(10.0, ge=0)
    step_overhead_ms: float = Field(1.0, ge=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    reserve_gib: float = Field(3.0, ge=0)
    gpus_per_node: int = Field(8, gt=0)
    inter_node_gb_s: float = Field(50.0, gt=0)


FITTED_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms")


class CalibratedEntry(StrictModel):
    """Factors fitted from measured points for one gpu/quant pair."""

    bandwidth_efficiency: float = Field(gt=0, le=1)
    compute_efficiency: float = Field(gt=0, le=1)
    step_overhead_ms: float = Field(ge=0)
    n_points: int = Field(ge=1)
    rms_log_error: float = Field(ge=0)
    source: str = ""
    fitted_on: str = ""


class RooflineConfig(StrictModel):
    """configs/roofline.yaml. Quantization presets come from THE registry (bench.config.quant);
    a `quantizations:` section may override a preset's fields or add a preset."""

    defaults: Efficiency = Efficiency()
    per_gpu: dict[str, dict[str, float]] = Field(default_factory=dict)
    quantizations: dict[str, QuantSpec] = Field(default_factory=dict)
    calibrated: dict[str, CalibratedEntry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _registry_presets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        quants: dict[str, Any] = {k: p.as_dict() for k, p in quant_registry.PLANNER_PRESETS.items()}
        for k, v in (data.get("quantizations") or {}).items():
            v = v.model_dump() if isinstance(v, QuantSpec) else v
            quants[k] = {**quants.get(k, {}), "name": k, **v} if isinstance(v, dict) else v
        return {**data, "quantizations": quants, "calibrated": data.get("calibrated") or {}}


def load_roofline_config(path: Path | None = None) -> RooflineConfig:
    """configs/roofline.yaml with the user's roofline.yaml (--config-dir) layered over it (defaults by
    field, per_gpu / quantizations / calibrated by key); or the one file `path`."""
    return load_config("roofline.yaml", RooflineConfig, path=path,
                       keyed=("defaults", "per_gpu", "quantizations", "calibrated"),
                       shape="a roofline file must be a YAML mapping (defaults, per_gpu, quantizations, calibrated)")


def writable_roofline_config() -> Path:
    """Where calibration writes: the user's roofline.yaml when a config directory is set (an installed
    package's own files are not the user's to edit), else the shipped configs/roofline.yaml."""
    user = base.user_config_dir()
    return user / "roofline.yaml" if user is not None else ROOFLINE_CONFIG


def resolve_quant(name: str, kv_bits: float | None = None, cfg: RooflineConfig | None = None) -> QuantSpec:
    """A preset by name (bf16, fp8, fp8-kv8, int8, int8-dense, int4, fp4) or by any sweep quantization
    or alias of bench.config.quant (int8-w8a8-dense -> int8-dense, awq -> int4, ...), optionally with
    KV bits overridden. The preset's name is the calibration key's quant part."""
    cfg = cfg or load_roofline_config()
    key = name if name in cfg.quantizations else quant_registry.planner_preset_name(name)
    if key is None or key not in cfg.quantizations:
        allowed = list(cfg.quantizations) + [q for q in quant_registry.QUANTIZATIONS if q not in cfg.quantizations]
        raise UserInputError(f"quant: unknown quantization {name!r}; allowed: {', '.join(allowed)}")
    q = cfg.quantizations[key]
    if kv_bits is not None:
        if kv_bits not in (4, 8, 16):
            raise UserInputError(f"kv_bits must be 4, 8 or 16 (got {kv_bits})")
        q = q.model_copy(update={"kv_bits": float(kv_bits)})
    return q


def efficiency_for(gpu_id: str, quant: str, cfg: RooflineConfig | None = None) -> tuple[Efficiency, str]:
    """Factors for a gpu/quant pair and where they came from ("default" or "calibrated:<key>")."""
    cfg = cfg or load_roofline_config()
    eff = cfg.defaults.model_dump()
    eff.update(cfg.per_gpu.get(gpu_id, {}))
    key = calibration_key(gpu_id, quant)
    source = "default"
    if key in cfg.calibrated:
        eff.update({f: getattr(cfg.calibrated[key], f) for f in FITTED_FIELDS})
        source = f"calibrated:{key}"
    try:
        return Efficiency(**eff), source
    except ValidationError as e:
        raise UserInputError(f"configs/roofline.yaml: per_gpu.{gpu_id}: {e.errors()[0]['msg']}") from None


def calibration_key(gpu_id: str, quant: str) -> str:
    return f"{gpu_id}/{quant}"


# --- GPU peaks ----------------------------------------------------------------------------------


class GpuPeaks(GpuSpec):
    """One configs/hardware.yaml GPU (bench.config.hardware.GpuSpec) with its id, as the roofline
    needs it: a BF16 tensor peak is required, and `tflops` picks the peak for a GEMM precision."""

    id: str
    name: str = ""
    tflops_bf16: float = Field(gt=0)

    def tflops(self, compute: str) -> tuple[float, str]:
        """Peak for a GEMM precision, falling back to the next wider one the GPU has."""
        for c in _COMPUTE_FALLBACK[compute]:
            v = getattr(self, f"tflops_{c}")
            if v:
                return float(v), c
        return self.tflops_bf16, "bf16"


def get_gpu(gpu_id: str) -> GpuPeaks:
    """The hardware catalog's GPU `gpu_id` as roofline peaks; unknown ids name the allowed ones."""
    spec = load_hardware().gpu(gpu_id)
    try:
        return GpuPeaks(id=gpu_id, **{k: v for k, v in spec.model_dump().items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = f"configs/hardware.yaml: gpus.{gpu_id}.{first['loc'][0]}"
        raise UserInputError(f"{where}: {first['msg']}") from None


# --- the formulas ---------------------------------------------------------------------------------


def expected_experts_touched(n_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts hit when `tokens` tokens each pick top_k of n_experts uniformly.

    E * (1 - (1 - k/E)^T): T=1 gives k, T -> infinity gives E. Real routers are not uniform, so
    this is an upper bound on distinct experts (a lower bound on locality) at a given batch.
    """
    if n_experts <= 0 or top_k <= 0 or tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


@dataclass(frozen=True)
class Deployment:
    """Everything fixed for one server: model, GPU, quantization, parallelism, factors."""

    hp: Hyperparameters
    gpu: GpuPeaks
    quant: QuantSpec
    tp: int = 1
    ep: bool = False
    eff: Efficiency = field(default_factory=Efficiency)

    # weights ---------------------------------------------------------------------------------
    def routed_expert_params(self) -> int:
        return self.hp.num_moe_layers * self.hp.n_routed_experts * self.hp.expert_params()

    def weight_bytes_total(self) -> float:
        """All replica weights: decoder stack at weight_bits, embeddings + LM head at 16 bits."""
        stack = self.hp.layer_stack_params(active_only=False)
        routed = self.routed_expert_params()
        return ((stack - routed) * self.quant.weight_bits + routed * self.quant.expert_bits) / 8 \
            + self.hp.embedding_params() * 2.0

    def weight_gib_per_gpu(self) -> float:
        return self.weight_bytes_total() / self.tp / GIB

    def kv_bytes_per_token_per_gpu(self) -> float:
        kv_heads = max(self.hp.num_key_value_heads, 1)
        share = max(kv_heads / self.tp, 1.0) / kv_heads
        return self.hp.kv_bytes_per_token(self.quant.kv_bits / 8) * share

    # one engine step, at efficiency 1 -----------------------------------------------------
    def step_raw(self, n_dec: float, ctx: float, n_pre: float = 0.0) -> StepRaw:
        """Per-GPU seconds for one step at 100% of every peak (memory, compute) plus comm seconds.

        n_dec sequences decode one token each at mean context ctx; n_pre prompt tokens of ONE
        prompt are prefilled (causal attention over n_pre/2 on average).
        """
        hp, q, tp = self.hp, self.quant, self.tp
        tokens = n_dec + n_pre
        wb = q.weight_bits / 8
        routed_active = hp.num_moe_layers * hp.num_experts_per_tok * hp.expert_params()
        always_params = hp.active_params() - routed_active
        touched = expected_experts_touched(hp.n_routed_experts, hp.num_experts_per_tok, tokens)
        routed_bytes = hp.num_moe_layers * touched * hp.expert_params() * q.expert_bits / 8
        lm_head_bytes = hp.vocab_size * hp.hidden_size * 2.0
        kv_bytes_per_gpu = n_dec * ctx * self.kv_bytes_per_token_per_gpu()
        bytes_per_gpu = (always_params * wb + routed_bytes + lm_head_bytes) / tp + kv_bytes_per_gpu

        logits_tokens = n_dec + (1 if n_pre > 0 else 0)
        gemm_flops = 2.0 * hp.active_params() * tokens + 2.0 * hp.hidden_size * hp.vocab_size * logits_tokens
        # routed experts kept in BF16 (partial INT8) run their GEMMs on the BF16 units
        bf16_gemm_flops = 2.0 * routed_active * tokens if q.routed_expert_bits is not None else 0.0
        attn_per_ctx = 4.0 * hp.num_attention_heads * hp.head_dim * hp.num_hidden_layers
        attn_flops = attn_per_ctx * (n_dec * ctx + n_pre * n_pre / 2.0)
        peak, _ = self.gpu.tflops(q.compute)
        compute_s = ((gemm_flops - bf16_gemm_flops) / (peak * 1e12)
                     + (attn_flops + bf16_gemm_flops) / (self.gpu.tflops_bf16 * 1e12)) / tp
        memory_s = bytes_per_gpu / (self.gpu.hbm_gb_s * 1e9)
        return StepRaw(memory_s=memory_s, compute_s=compute_s, comm_s=self.comm_s(tokens))

    def comm_s(self, tokens: float) -> float:
        """Collective time of one forward over `tokens` tokens (0 without tensor parallelism)."""
        if self.tp <= 1 or tokens <= 0:
            return 0.0
        e = self.eff
        link = self.gpu.interconnect_gb_s or e.inter_node_gb_s
        if self.tp > e.gpus_per_node:
            link = min(link, e.inter_node_gb_s)
        bw = link * 1e9 * e.interconnect_efficiency
        ring = 2.0 * (self.tp - 1) / self.tp
        msg = tokens * self.hp.hidden_size * ACT_BYTES
        lat = e.collective_latency_us * 1e-6
        allreduce = ring * msg / bw + lat
        L, n_moe = self.hp.num_hidden_layers, self.hp.num_moe_layers
        if self.ep and n_moe:
            # dispatch + combine: each token's k expert copies; (tp-1)/tp of them leave the GPU
            a2a = 2.0 * (self.hp.num_experts_per_tok * msg * (self.tp - 1) / self.tp / bw + lat)
            return L * allreduce + (L - n_moe) * allreduce + n_moe * a2a
        return 2 * L * allreduce


@dataclass(frozen=True)
class StepRaw:
    """Seconds of one step at 100% of HBM / tensor peak, and its communication seconds."""

    memory_s: float
    compute_s: float
    comm_s: float

    def time_s(self, bw_eff: float, compute_eff: float, overhead_s: float) -> float:
        return max(self.memory_s / bw_eff, self.compute_s / compute_eff) + self.comm_s + overhead_s

    def bound(self, bw_eff: float, compute_eff: float) -> str:
        return "memory" if self.memory_s / bw_eff >= self.compute_s / compute_eff else "compute"


# --- memory fit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFit:
    weights_gib_per_gpu: float
    usable_gib_per_gpu: float
    kv_budget_gib_per_gpu: float
    kv_kib_per_token_per_gpu: float
    context_tokens: int
    max_concurrent_seqs: int
    kv_capacity_tokens: int
    fits: bool


def memory_fit(dep: Deployment, context_tokens: int) -> MemoryFit:
    """Weights + reserve + KV at `context_tokens` per sequence against the usable HBM of one GPU."""
    usable = dep.gpu.memory_gb * dep.eff.gpu_memory_utilization
    weights = dep.weight_gib_per_gpu()
    budget = usable - weights - dep.eff.reserve_gib
    per_tok = dep.kv_bytes_per_token_per_gpu()
    cap_tokens = int(max(budget, 0.0) * GIB // per_tok) if per_tok > 0 else 0
    max_seqs = cap_tokens // max(context_tokens, 1)
    return MemoryFit(
        weights_gib_per_gpu=weights, usable_gib_per_gpu=usable, kv_budget_gib_per_gpu=budget,
        kv_kib_per_token_per_gpu=per_tok / 1024, context_tokens=context_tokens,
        max_concurrent_seqs=int(max_seqs), kv_capacity_tokens=cap_tokens, fits=max_seqs >= 1,
    )


# --- serving at a concurrency ---------------------------------------------------------------------


@dataclass(frozen=True)
class PointRaw:
    """Everything about one curve point that does not depend on the fitted factors."""

    concurrency_per_replica: float
    batch: float
    osl: int
    decode: StepRaw
    mixed: StepRaw  # prefill of one prompt next to batch-1 decodes
    prefill_marginal: StepRaw  # the prompt's own compute and communication


def point_raw(dep: Deployment, isl: int, osl: int, concurrency_per_replica: float, max_seqs: int) -> PointRaw:
    batch = float(min(concurrency_per_replica, max_seqs))
    ctx = isl + osl / 2.0
    return PointRaw(
        concurrency_per_replica=concurrency_per_replica, batch=batch, osl=osl,
        decode=dep.step_raw(batch, ctx),
        mixed=dep.step_raw(max(batch - 1.0, 0.0), ctx, n_pre=isl),
        prefill_marginal=_marginal(dep, isl),
    )


def _marginal(dep: Deployment, isl: int) -> StepRaw:
    full = dep.step_raw(0.0, 0.0, n_pre=isl)
    return StepRaw(memory_s=0.0, compute_s=full.compute_s, comm_s=full.comm_s)


class Latencies(NamedTuple):
    tpot_s: float
    ttft_s: float
    e2el_s: float
    served_e2el_s: float  # E2EL without queueing: what throughput is computed from


def latencies_s(raw: PointRaw, bw_eff: float, compute_eff: float, overhead_s: float) -> Latencies:
    """The single place the serving formulas live (`_loss` is the same, vectorized for the fit)."""
    b = raw.batch
    marginal = raw.prefill_marginal.compute_s / compute_eff + raw.prefill_marginal.comm_s
    tpot = raw.decode.time_s(bw_eff, compute_eff, overhead_s) + max(b - 1.0, 0.0) / raw.osl * marginal
    ttft0 = raw.mixed.time_s(bw_eff, compute_eff, overhead_s)
    served = ttft0 + (raw.osl - 1) * tpot
    wait = max(raw.concurrency_per_replica / b - 1.0, 0.0) * served
    return Latencies(tpot, ttft0 + wait, served + wait, served)
