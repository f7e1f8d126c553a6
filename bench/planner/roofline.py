"""Analytical roofline estimate for model x GPU x quantization x parallelism not measured here.

Why: the MaaS team must price GLM-4.6 on 8xH200 or MiniMax-M2 on 4xH100 before renting them. This
module turns the catalog's real hyperparameters (bench.config.catalog) and the GPU peaks
(configs/hardware.yaml) into memory fit, TTFT, TPOT and tokens/s/GPU, and corrects itself with
efficiency factors fitted from measured runs (configs/roofline.yaml). Every result carries
`source: "estimate"`, so a report never confuses it with a measurement.

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

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.config.base import CONFIG_DIR, read_yaml
from bench.config.catalog import Hyperparameters, ModelSpec, get_model
from bench.errors import UserInputError

ROOFLINE_CONFIG = CONFIG_DIR / "roofline.yaml"
GIB = 2.0**30
ACT_BYTES = 2.0  # activations and collectives travel in BF16 in every preset
DEFAULT_CONCURRENCIES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMPARE_GPUS = ("h100", "h200", "h20", "b200", "ascend-910b")
COMPARE_QUANTS = ("bf16", "fp8", "int4")
# Which tensor peak a GEMM uses, and what it falls back to on a GPU without that precision
# (e.g. FP8 weights on A100 or Ascend 910B run as W8A16 on the BF16 units).
_COMPUTE_FALLBACK = {"fp4": ("fp4", "fp8", "bf16"), "fp8": ("fp8", "bf16"), "int8": ("int8", "bf16"),
                     "bf16": ("bf16",)}


# --- configuration ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantSpec(_Strict):
    """Bits per weight / activation / KV element and which tensor peak the GEMMs use."""

    name: str = "custom"
    weight_bits: float = Field(gt=0, le=32)
    activation_bits: int = Field(16, gt=0, le=32)
    kv_bits: float = Field(16, gt=0, le=32)
    compute: Literal["bf16", "fp8", "int8", "fp4"] = "bf16"


class Efficiency(_Strict):
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


class CalibratedEntry(_Strict):
    """Factors fitted from measured points for one gpu/quant pair."""

    bandwidth_efficiency: float = Field(gt=0, le=1)
    compute_efficiency: float = Field(gt=0, le=1)
    step_overhead_ms: float = Field(ge=0)
    n_points: int = Field(ge=1)
    rms_log_error: float = Field(ge=0)
    source: str = ""
    fitted_on: str = ""


class RooflineConfig(_Strict):
    defaults: Efficiency = Efficiency()
    per_gpu: dict[str, dict[str, float]] = Field(default_factory=dict)
    quantizations: dict[str, QuantSpec] = Field(default_factory=dict)
    calibrated: dict[str, CalibratedEntry] = Field(default_factory=dict)


def load_roofline_config(path: Path | None = None) -> RooflineConfig:
    """Read configs/roofline.yaml; validation problems become one-line UserInputErrors."""
    path = Path(path or ROOFLINE_CONFIG)
    data = read_yaml(path) or {}
    quants = {k: {"name": k, **v} for k, v in (data.get("quantizations") or {}).items()}
    try:
        return RooflineConfig(**{**data, "quantizations": quants, "calibrated": data.get("calibrated") or {}})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserInputError(f"{path}: {loc}: {first['msg']}") from None


def resolve_quant(name: str, kv_bits: float | None = None, cfg: RooflineConfig | None = None) -> QuantSpec:
    """A preset by name (bf16, fp8, fp8-kv8, int8, int4, fp4), optionally with KV bits overridden."""
    cfg = cfg or load_roofline_config()
    key = {"none": "bf16", "bfloat16": "bf16", "w8a8": "int8", "int8-w8a8": "int8", "awq": "int4",
           "gptq": "int4", "awq_marlin": "int4", "gptq_marlin": "int4", "nvfp4": "fp4"}.get(name, name)
    if key not in cfg.quantizations:
        raise UserInputError(f"quant: unknown quantization {name!r}; allowed: {', '.join(cfg.quantizations)}")
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


class GpuPeaks(_Strict):
    """The datasheet numbers the roofline needs (a view of one configs/hardware.yaml entry)."""

    id: str
    name: str = ""
    memory_gb: float = Field(gt=0)
    hbm_gb_s: float = Field(gt=0)
    tflops_bf16: float = Field(gt=0)
    tflops_fp8: float | None = None
    tflops_int8: float | None = None
    tflops_fp4: float | None = None
    interconnect_gb_s: float | None = Field(None, description="per-GPU scale-up bandwidth, one direction")

    def tflops(self, compute: str) -> tuple[float, str]:
        """Peak for a GEMM precision, falling back to the next wider one the GPU has."""
        for c in _COMPUTE_FALLBACK[compute]:
            v = getattr(self, f"tflops_{c}")
            if v:
                return float(v), c
        return self.tflops_bf16, "bf16"


def _hardware_gpus() -> dict[str, Any]:
    """GPU entries of configs/hardware.yaml as plain dicts."""
    from bench.config.hardware import load_hardware

    return {k: v.model_dump() for k, v in load_hardware().gpus.items()}


def get_gpu(gpu_id: str) -> GpuPeaks:
    gpus = _hardware_gpus()
    if gpu_id not in gpus:
        raise UserInputError(f"gpu: unknown GPU {gpu_id!r}; allowed: {', '.join(gpus)}")
    raw = gpus[gpu_id]
    fields = {k: raw.get(k) for k in GpuPeaks.model_fields if k != "id" and raw.get(k) is not None}
    try:
        return GpuPeaks(id=gpu_id, **fields)
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
        return stack * self.quant.weight_bits / 8 + self.hp.embedding_params() * 2.0

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
        routed_bytes = hp.num_moe_layers * touched * hp.expert_params() * wb
        lm_head_bytes = hp.vocab_size * hp.hidden_size * 2.0
        kv_bytes_per_gpu = n_dec * ctx * self.kv_bytes_per_token_per_gpu()
        bytes_per_gpu = (always_params * wb + routed_bytes + lm_head_bytes) / tp + kv_bytes_per_gpu

        logits_tokens = n_dec + (1 if n_pre > 0 else 0)
        gemm_flops = 2.0 * hp.active_params() * tokens + 2.0 * hp.hidden_size * hp.vocab_size * logits_tokens
        attn_per_ctx = 4.0 * hp.num_attention_heads * hp.head_dim * hp.num_hidden_layers
        attn_flops = attn_per_ctx * (n_dec * ctx + n_pre * n_pre / 2.0)
        peak, _ = self.gpu.tflops(q.compute)
        compute_s = (gemm_flops / (peak * 1e12) + attn_flops / (self.gpu.tflops_bf16 * 1e12)) / tp
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


@dataclass(frozen=True)
class CurvePoint:
    concurrency: int
    batch_per_replica: float
    tpot_ms: float
    ttft_ms: float
    e2el_ms: float
    interactivity_tok_s_user: float
    output_tok_s: float
    output_tok_s_per_gpu: float
    total_tok_s_per_gpu: float
    decode_bound: str
    queued: bool
    source: str = "estimate"


@dataclass(frozen=True)
class Estimate:
    model: str
    gpu: str
    count: int
    tp: int
    ep: bool
    replicas: int
    quant: str
    weight_bits: float
    kv_bits: float
    compute_precision: str
    isl: int
    osl: int
    efficiency: dict[str, float]
    efficiency_source: str
    memory: MemoryFit
    curve: list[CurvePoint]
    notes: list[str]
    source: str = "estimate"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_model(model: str | ModelSpec | Hyperparameters) -> tuple[str, Hyperparameters]:
    if isinstance(model, Hyperparameters):
        return "custom", model
    if isinstance(model, ModelSpec):
        return model.name, model.hp
    return model, get_model(model).hp


def estimate(
    model: str | ModelSpec | Hyperparameters,
    gpu: str | GpuPeaks,
    count: int,
    quant: str | QuantSpec,
    isl: int,
    osl: int,
    concurrencies: tuple[int, ...] | list[int] = DEFAULT_CONCURRENCIES,
    tp: int | None = None,
    ep: bool = False,
    kv_bits: float | None = None,
    efficiency: Efficiency | None = None,
    cfg: RooflineConfig | None = None,
) -> Estimate:
    """Memory fit and the throughput-latency curve of `count` GPUs serving `model`.

    `tp` defaults to `count` (one replica); with a smaller tp, count/tp replicas split the
    concurrency evenly. `efficiency` overrides the config lookup (defaults / calibrated).
    """
    if count <= 0:
        raise UserInputError(f"count must be a positive number of GPUs (got {count})")
    if isl <= 0 or osl <= 1:
        raise UserInputError(f"isl must be > 0 and osl > 1 tokens (got isl={isl}, osl={osl})")
    tp = count if tp is None else tp
    if tp <= 0 or count % tp:
        raise UserInputError(f"tp must divide count (got tp={tp}, count={count})")
    if not concurrencies or any(int(c) <= 0 for c in concurrencies):
        raise UserInputError("concurrency values must be positive integers")
    cfg = cfg or load_roofline_config()
    name, hp = _resolve_model(model)
    gpu_peaks = gpu if isinstance(gpu, GpuPeaks) else get_gpu(gpu)
    q = quant if isinstance(quant, QuantSpec) else resolve_quant(quant, kv_bits, cfg)
    if isinstance(quant, QuantSpec) and kv_bits is not None:
        q = q.model_copy(update={"kv_bits": float(kv_bits)})
    if efficiency is not None:
        eff, eff_source = efficiency, "given"
    else:
        eff, eff_source = efficiency_for(gpu_peaks.id, q.name, cfg)
    dep = Deployment(hp=hp, gpu=gpu_peaks, quant=q, tp=tp, ep=ep, eff=eff)
    replicas = count // tp
    fit = memory_fit(dep, isl + osl)
    notes = _notes(dep, fit)
    curve: list[CurvePoint] = []
    if fit.fits:
        for c in sorted({int(c) for c in concurrencies}):
            curve.append(_curve_point(dep, isl, osl, c, replicas, fit.max_concurrent_seqs))
    _, precision = gpu_peaks.tflops(q.compute)
    return Estimate(
        model=name, gpu=gpu_peaks.id, count=count, tp=tp, ep=ep, replicas=replicas, quant=q.name,
        weight_bits=q.weight_bits, kv_bits=q.kv_bits, compute_precision=precision, isl=isl, osl=osl,
        efficiency=eff.model_dump(), efficiency_source=eff_source, memory=fit, curve=curve, notes=notes,
    )


def _curve_point(dep: Deployment, isl: int, osl: int, c: int, replicas: int, max_seqs: int) -> CurvePoint:
    e = dep.eff
    raw = point_raw(dep, isl, osl, c / replicas, max_seqs)
    lat = latencies_s(raw, e.bandwidth_efficiency, e.compute_efficiency, e.step_overhead_ms / 1e3)
    tpot, ttft, e2el = lat.tpot_s, lat.ttft_s, lat.e2el_s
    out_total = raw.batch * osl / lat.served_e2el_s * replicas
    gpus = replicas * dep.tp
    return CurvePoint(
        concurrency=c, batch_per_replica=raw.batch, tpot_ms=tpot * 1e3, ttft_ms=ttft * 1e3,
        e2el_ms=e2el * 1e3, interactivity_tok_s_user=1.0 / tpot, output_tok_s=out_total,
        output_tok_s_per_gpu=out_total / gpus, total_tok_s_per_gpu=out_total * (isl + osl) / osl / gpus,
        decode_bound=raw.decode.bound(e.bandwidth_efficiency, e.compute_efficiency),
        queued=raw.concurrency_per_replica > raw.batch,
    )


def _notes(dep: Deployment, fit: MemoryFit) -> list[str]:
    notes: list[str] = []
    if not fit.fits:
        notes.append(
            f"does not fit: weights {fit.weights_gib_per_gpu:.1f} GiB/GPU + reserve "
            f"{dep.eff.reserve_gib} GiB "
            f"leave {fit.kv_budget_gib_per_gpu:.1f} GiB of {fit.usable_gib_per_gpu:.1f} usable for KV "
            f"(needs {fit.kv_kib_per_token_per_gpu * fit.context_tokens / 2**20:.2f} GiB per sequence)"
        )
    _, precision = dep.gpu.tflops(dep.quant.compute)
    if precision != dep.quant.compute:
        notes.append(f"{dep.gpu.id} has no {dep.quant.compute} tensor peak; GEMMs estimated at {precision}")
    moe_i = dep.hp.moe_intermediate_size or 0
    if dep.quant.compute == "fp8" and moe_i and not dep.ep and (moe_i // dep.tp) % 128:
        notes.append(f"expert width {moe_i}/tp{dep.tp} = {moe_i // dep.tp} is not a multiple of 128: "
                     "block-128 FP8 checkpoints (e.g. MiniMax-M2) refuse pure TP here; use --ep")
    if dep.tp > dep.eff.gpus_per_node:
        notes.append(f"tp {dep.tp} spans nodes: collectives at {dep.eff.inter_node_gb_s} GB/s scale-out")
    if dep.gpu.interconnect_gb_s is None and dep.tp > 1:
        notes.append(f"{dep.gpu.id} has no interconnect_gb_s; collectives at {dep.eff.inter_node_gb_s} GB/s")
    return notes


# --- SLO ------------------------------------------------------------------------------------------

_SLO_RE = re.compile(r"^\s*(ttft_ms|tpot_ms|e2el_ms)\s*<=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_slo(text: str | None) -> dict[str, float]:
    """'tpot_ms<=50,ttft_ms<=2000' -> {'tpot_ms': 50.0, 'ttft_ms': 2000.0}."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        m = _SLO_RE.match(part)
        if not m:
            raise UserInputError(f"slo: cannot parse {part.strip()!r}; use e.g. 'tpot_ms<=50' "
                                 "(keys ttft_ms, tpot_ms, e2el_ms; comma-separated)")
        out[m.group(1)] = float(m.group(2))
    return out


def meets_slo(point: CurvePoint, slo: dict[str, float]) -> bool:
    return all(getattr(point, k) <= v for k, v in slo.items())


def best_point(est: Estimate, slo: dict[str, float] | None = None) -> CurvePoint | None:
    """Highest output tok/s/GPU on the curve that meets every SLO threshold (None if none does)."""
    ok = [p for p in est.curve if meets_slo(p, slo or {})]
    return max(ok, key=lambda p: p.output_tok_s_per_gpu) if ok else None


def compare(
    model: str, count: int, isl: int, osl: int, gpus: tuple[str, ...] = COMPARE_GPUS,
    quants: tuple[str, ...] = COMPARE_QUANTS, concurrencies: tuple[int, ...] = DEFAULT_CONCURRENCIES,
    slo: dict[str, float] | None = None, tp: int | None = None, ep: bool = False,
) -> list[tuple[Estimate, CurvePoint | None]]:
    """Estimate every GPU x quantization; each with its best point under the SLO."""
    cfg = load_roofline_config()
    out = []
    for g in gpus:
        for qn in quants:
            est = estimate(model, g, count, qn, isl, osl, concurrencies, tp=tp, ep=ep, cfg=cfg)
            out.append((est, best_point(est, slo)))
    return out


# --- calibration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredPoint:
    """One measured row reduced to what the roofline predicts."""

    model: str
    gpu: str
    quant: str
    count: int
    tp: int
    concurrency: int
    isl: int
    osl: int
    tpot_ms: float | None
    ttft_ms: float | None
    ep: bool = False
    kv_bits: float | None = None


def _quant_of_row(row: dict[str, Any]) -> str:
    q = row.get("quantization")
    if q is None or (isinstance(q, float) and math.isnan(q)) or q in ("", "none"):
        return "bf16"
    return {"int8-w8a8": "int8", "awq": "int4", "gptq": "int4", "awq_marlin": "int4",
            "gptq_marlin": "int4", "compressed-tensors": "int8"}.get(str(q), str(q))


def points_from_results(df: Any) -> list[MeasuredPoint]:
    """Rows of bench.sweep.store.load_results usable for calibration: ok, closed-loop, and a model the
    catalog knows (by name or hub id; other rows are skipped, their architecture is unknown).

    Mean ISL/OSL per request = input_tokens / completed and output_tokens / completed.
    """
    from bench.config.catalog import load_models

    models = load_models()
    by_hub = {m.hf_id: name for name, m in models.items() if m.hf_id}
    out: list[MeasuredPoint] = []
    for row in df.to_dict("records"):
        if row.get("status", "ok") not in ("ok", None):
            continue
        model = str(row.get("model"))
        model = model if model in models else by_hub.get(model, "")
        if not model:  # a local dir or hub id the catalog does not describe: no hyperparameters
            continue
        conc, done = row.get("concurrency"), row.get("completed") or 0
        if conc is None or (isinstance(conc, float) and math.isnan(conc)) or done <= 0:
            continue
        tp = int(row.get("tensor_parallel_size") or 1)
        count = int(row.get("gpu_count") or tp)
        kv = row.get("kv_cache_dtype")
        out.append(MeasuredPoint(
            model=model, gpu=str(row.get("gpu_type") or row.get("gpu")), quant=_quant_of_row(row),
            count=count, tp=tp, concurrency=int(conc),
            isl=max(int(round(row["input_tokens"] / done)), 1),
            osl=max(int(round(row["output_tokens"] / done)), 2),
            tpot_ms=_pos(row.get("tpot_ms_p50")), ttft_ms=_pos(row.get("ttft_ms_p50")),
            ep=bool(row.get("expert_parallel") or False),
            kv_bits=8.0 if isinstance(kv, str) and kv.startswith("fp8") else None,
        ))
    return out


def _pos(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f > 0 and not math.isnan(f) else None


@dataclass(frozen=True)
class FitResult:
    key: str
    bandwidth_efficiency: float
    compute_efficiency: float
    step_overhead_ms: float
    n_points: int
    rms_log_error: float

    def entry(self, source: str = "") -> CalibratedEntry:
        return CalibratedEntry(
            bandwidth_efficiency=round(self.bandwidth_efficiency, 4),
            compute_efficiency=round(self.compute_efficiency, 4),
            step_overhead_ms=round(self.step_overhead_ms, 4), n_points=self.n_points,
            rms_log_error=round(self.rms_log_error, 5), source=source, fitted_on=date.today().isoformat(),
        )


_BOUNDS = {"bandwidth_efficiency": (0.02, 1.0), "compute_efficiency": (0.01, 1.0),
           "step_overhead_ms": (0.0, 100.0)}
_NO_POINTS = "calibration: no usable measured points (need ok rows with concurrency and TPOT/TTFT)"


def fit_efficiency(points: list[MeasuredPoint], base: Efficiency | None = None,
                   gpu: GpuPeaks | None = None, cfg: RooflineConfig | None = None) -> FitResult:
    """Least squares on log(predicted / measured) TPOT and TTFT over (bandwidth, compute, overhead).

    The residual is a max() of two terms, so it is not smooth; a zooming grid search over the
    three bounded parameters (vectorized, deterministic) finds the global minimum reliably where a
    gradient method can stall on the kink. Fixed factors (interconnect, memory) come from `base`.
    """
    if not points:
        raise UserInputError(_NO_POINTS)
    keys = {calibration_key(p.gpu, p.quant) for p in points}
    if len(keys) != 1:
        raise UserInputError(f"calibration: fit one gpu/quant pair at a time (got {sorted(keys)})")
    key = keys.pop()
    cfg = cfg or load_roofline_config()
    gpu_peaks = gpu or get_gpu(points[0].gpu)
    base = base or efficiency_for(gpu_peaks.id, points[0].quant, cfg)[0]
    raws: list[PointRaw] = []
    meas_tpot: list[float] = []
    meas_ttft: list[float] = []
    for p in points:
        _, hp = _resolve_model(p.model)
        q = resolve_quant(p.quant, p.kv_bits, cfg)
        dep = Deployment(hp=hp, gpu=gpu_peaks, quant=q, tp=p.tp, ep=p.ep, eff=base)
        replicas = max(p.count // p.tp, 1)
        fit = memory_fit(dep, p.isl + p.osl)
        max_seqs = max(fit.max_concurrent_seqs, 1)
        raws.append(point_raw(dep, p.isl, p.osl, p.concurrency / replicas, max_seqs))
        meas_tpot.append(p.tpot_ms / 1e3 if p.tpot_ms else math.nan)
        meas_ttft.append(p.ttft_ms / 1e3 if p.ttft_ms else math.nan)
    arr = _RawArrays.build(raws)
    m_tpot, m_ttft = np.array(meas_tpot), np.array(meas_ttft)
    n_obs = int(np.sum(~np.isnan(m_tpot)) + np.sum(~np.isnan(m_ttft)))
    if n_obs == 0:
        raise UserInputError("calibration: the measured points carry neither TPOT nor TTFT")

    lo = np.array([_BOUNDS[f][0] for f in FITTED_FIELDS])
    hi = np.array([_BOUNDS[f][1] for f in FITTED_FIELDS])
    center, half = (lo + hi) / 2, (hi - lo) / 2
    best = center
    n = 15
    for _ in range(40):
        axes = [np.clip(np.linspace(center[i] - half[i], center[i] + half[i], n), lo[i], hi[i])
                for i in range(3)]
        a, c, o = np.meshgrid(*axes, indexing="ij")
        loss = _loss(arr, m_tpot, m_ttft, a[..., None], c[..., None], o[..., None] / 1e3)
        idx = np.unravel_index(int(np.nanargmin(loss)), loss.shape)
        best = np.array([axes[0][idx[0]], axes[1][idx[1]], axes[2][idx[2]]])
        center, half = best, half * 0.6
    final = float(_loss(arr, m_tpot, m_ttft, best[0], best[1], best[2] / 1e3))
    return FitResult(key=key, bandwidth_efficiency=float(best[0]), compute_efficiency=float(best[1]),
                     step_overhead_ms=float(best[2]), n_points=len(points),
                     rms_log_error=math.sqrt(final / n_obs))


@dataclass
class _RawArrays:
    """PointRaw fields as numpy columns, so the fit evaluates a whole grid at once."""

    conc: np.ndarray
    batch: np.ndarray
    osl: np.ndarray
    d_mem: np.ndarray
    d_cmp: np.ndarray
    d_comm: np.ndarray
    m_mem: np.ndarray
    m_cmp: np.ndarray
    m_comm: np.ndarray
    p_cmp: np.ndarray
    p_comm: np.ndarray

    @classmethod
    def build(cls, raws: list[PointRaw]) -> _RawArrays:
        def col(f: Any) -> np.ndarray:
            return np.array([f(r) for r in raws], dtype=float)

        return cls(
            conc=col(lambda r: r.concurrency_per_replica), batch=col(lambda r: r.batch),
            osl=col(lambda r: r.osl),
            d_mem=col(lambda r: r.decode.memory_s), d_cmp=col(lambda r: r.decode.compute_s),
            d_comm=col(lambda r: r.decode.comm_s), m_mem=col(lambda r: r.mixed.memory_s),
            m_cmp=col(lambda r: r.mixed.compute_s), m_comm=col(lambda r: r.mixed.comm_s),
            p_cmp=col(lambda r: r.prefill_marginal.compute_s),
            p_comm=col(lambda r: r.prefill_marginal.comm_s),
        )


def _loss(r: _RawArrays, m_tpot: np.ndarray, m_ttft: np.ndarray, a: Any, c: Any, o: Any) -> np.ndarray:
    """Sum of squared log errors; the same serving formulas as `latencies_s`, vectorized."""
    marginal = r.p_cmp / c + r.p_comm
    tpot = np.maximum(r.d_mem / a, r.d_cmp / c) + r.d_comm + o + np.maximum(r.batch - 1, 0) / r.osl * marginal
    ttft0 = np.maximum(r.m_mem / a, r.m_cmp / c) + r.m_comm + o
    e2el0 = ttft0 + (r.osl - 1) * tpot
    ttft = ttft0 + np.maximum(r.conc / r.batch - 1, 0) * e2el0
    e1 = np.where(np.isnan(m_tpot), 0.0, np.log(tpot / np.where(np.isnan(m_tpot), 1.0, m_tpot)))
    e2 = np.where(np.isnan(m_ttft), 0.0, np.log(ttft / np.where(np.isnan(m_ttft), 1.0, m_ttft)))
    return np.sum(e1**2, axis=-1) + np.sum(e2**2, axis=-1)


def calibrate(df: Any, cfg: RooflineConfig | None = None) -> list[FitResult]:
    """Fit one FitResult per gpu/quant pair found in a results DataFrame."""
    cfg = cfg or load_roofline_config()
    groups: dict[str, list[MeasuredPoint]] = {}
    for p in points_from_results(df):
        groups.setdefault(calibration_key(p.gpu, p.quant), []).append(p)
    if not groups:
        raise UserInputError(_NO_POINTS)
    return [fit_efficiency(pts, cfg=cfg) for _, pts in sorted(groups.items())]


def save_calibration(fits: list[FitResult], source: str = "", path: Path | None = None) -> Path:
    """Merge fitted entries into the `calibrated:` section, keeping everything above it verbatim."""
    path = Path(path or ROOFLINE_CONFIG)
    cfg = load_roofline_config(path)
    entries = {k: v.model_dump() for k, v in cfg.calibrated.items()}
    for f in fits:
        entries[f.key] = f.entry(source).model_dump()
    text = path.read_text()
    m = re.search(r"^calibrated:.*$", text, flags=re.MULTILINE | re.DOTALL)
    head = text[: m.start()] if m else text.rstrip("\n") + "\n\n"
    body = yaml.safe_dump({"calibrated": entries}, sort_keys=True, default_flow_style=False)
    from bench.sweep.store import atomic_write_text

    atomic_write_text(path, head + body)
    load_roofline_config(path)  # the file must still validate
    return path


# --- economics of an estimate (money via bench.econ.cost / bench.econ.margin; no formula repeated here) -------


def _rate_for(
    catalog: Any, gpu_id: str, tier: str, usd_per_cny: float | None
) -> tuple[float | None, str | None]:
    """$/GPU-hour at `tier`, else the GPU's first priced tier, else (None, None) when none is known."""
    spec = catalog.gpu(gpu_id)
    tiers = spec.cost_tiers()
    use = tier if tier in tiers else (tiers[0] if tiers else None)
    if use is None:
        return None, None
    return catalog.usd_per_gpu_hour(gpu_id, use, usd_per_cny), use


def _money(tok_out: float, tok_total: float, rate: float | None, price: Any, mix: Any,
           usd_per_cny: float | None) -> dict[str, float | None]:
    from bench.econ.cost import usd_per_m_tokens
    from bench.econ.margin import api_margin, break_even_utilization

    if rate is None or tok_out <= 0:
        return {"usd_per_m_output_tokens": None, "usd_per_m_tokens": None}
    out: dict[str, float | None] = {
        "usd_per_m_output_tokens": usd_per_m_tokens(tok_out, rate),
        "usd_per_m_tokens": usd_per_m_tokens(tok_total, rate),
    }
    if price is not None:
        m = api_margin(mix, price, tok_out, rate, 1.0, usd_per_cny=usd_per_cny)
        out["gross_margin"] = m.gross_margin
        out["break_even_utilization"] = break_even_utilization(
            mix, price, tok_out, rate, usd_per_cny=usd_per_cny
        )
    return out


def plan_estimate(
    model: str, gpu: str, count: int, quant: str, isl: int, osl: int, *,
    slo: dict[str, float] | None = None, tp: int | None = None, ep: bool = False,
    kv_bits: float | None = None,
    concurrencies: tuple[int, ...] | list[int] = DEFAULT_CONCURRENCIES, tier: str = "neocloud",
    price: Any = None, cached_share: float = 0.0, usd_per_gpu_hour: float | None = None,
    usd_per_cny: float | None = None, compare_gpus: tuple[str, ...] | None = None,
    compare_quants: tuple[str, ...] = COMPARE_QUANTS, catalog: Any = None,
) -> dict[str, Any]:
    """What `maas-bench plan` prints without measured points: the estimated curve, the best point
    under the SLO, $/M tokens at every price tier of the GPU, the gross margin at `price` (a
    PriceEntry) at full utilization, and optionally a GPU x quantization comparison.
    Every row carries source="estimate"."""
    from bench.config.hardware import load_hardware
    from bench.econ.margin import TrafficMix

    catalog = catalog or load_hardware()
    catalog.gpu(gpu)
    slo = slo or {}
    mix = TrafficMix(float(isl), float(osl), cached_share)
    cfg = load_roofline_config()
    est = estimate(model, gpu, count, quant, isl, osl, concurrencies, tp=tp, ep=ep, kv_bits=kv_bits, cfg=cfg)
    best = best_point(est, slo)
    if usd_per_gpu_hour is not None:
        main_rate, main_tier = usd_per_gpu_hour, "given"
    else:
        main_rate, main_tier = _rate_for(catalog, gpu, tier, usd_per_cny)
    curve = []
    for p in est.curve:
        row = asdict(p)
        row["meets_slo"] = meets_slo(p, slo)
        row.update(_money(p.output_tok_s_per_gpu, p.total_tok_s_per_gpu, main_rate, price, mix, usd_per_cny))
        curve.append(row)
    tiers: list[dict[str, Any]] = []
    if best is not None:
        rates = [("given", usd_per_gpu_hour)] if usd_per_gpu_hour is not None else [
            (t, catalog.usd_per_gpu_hour(gpu, t, usd_per_cny)) for t in catalog.gpu(gpu).cost_tiers()]
        for t, rate in rates:
            tiers.append({"tier": t, "usd_per_gpu_hour": rate, "concurrency": best.concurrency,
                          "output_tok_s_per_gpu": best.output_tok_s_per_gpu,
                          **_money(best.output_tok_s_per_gpu, best.total_tok_s_per_gpu, rate, price, mix,
                                   usd_per_cny), "source": "estimate"})
    out: dict[str, Any] = {
        "source": "estimate",
        "model": est.model, "gpu": est.gpu, "count": est.count, "tp": est.tp, "ep": est.ep,
        "replicas": est.replicas, "quant": est.quant, "weight_bits": est.weight_bits, "kv_bits": est.kv_bits,
        "compute_precision": est.compute_precision, "isl": isl, "osl": osl, "slo": slo,
        "tier": main_tier, "usd_per_gpu_hour": main_rate,
        "efficiency_source": est.efficiency_source, "efficiency": est.efficiency,
        "memory": asdict(est.memory), "notes": est.notes, "curve": curve,
        "best_under_slo": asdict(best) if best is not None else None, "cost_by_tier": tiers,
    }
    if compare_gpus:
        rows = []
        for g in compare_gpus:
            rate, used = _rate_for(catalog, g, tier, usd_per_cny)
            for qn in compare_quants:
                e = estimate(model, g, count, qn, isl, osl, concurrencies, tp=tp, ep=ep, cfg=cfg)
                b = best_point(e, slo)
                row = {"gpu": g, "quant": qn, "count": count, "fits": e.memory.fits,
                       "weights_gib_per_gpu": e.memory.weights_gib_per_gpu,
                       "max_concurrent_seqs": e.memory.max_concurrent_seqs,
                       "compute_precision": e.compute_precision,
                       "best_concurrency": b.concurrency if b else None,
                       "tpot_ms": b.tpot_ms if b else None, "ttft_ms": b.ttft_ms if b else None,
                       "output_tok_s_per_gpu": b.output_tok_s_per_gpu if b else None,
                       "tier": used, "usd_per_gpu_hour": rate, "efficiency_source": e.efficiency_source}
                no_money = {"usd_per_m_output_tokens": None, "usd_per_m_tokens": None}
                row.update(_money(b.output_tok_s_per_gpu, b.total_tok_s_per_gpu, rate, price, mix,
                                  usd_per_cny) if b else no_money)
                row["source"] = "estimate"
                rows.append(row)
        out["compare"] = rows
    return out
