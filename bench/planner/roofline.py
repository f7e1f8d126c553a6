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
  Hyperparameters.kv_bytes_per_token(kv_bits/8, tp), per attention type (bench.config.catalog): GQA
  KV split over TP by KV heads (replicated when tp > kv heads); an MLA latent and sparse-attention
  index keys on every rank. Max concurrent sequences = floor(budget / (KV per token x (ISL + OSL))).
- One engine step that decodes `n_dec` sequences at mean context `ctx` and prefills `n_pre`
  prompt tokens moves: the always-used weights (attention, dense FFNs, shared experts, routers,
  LM head) + the routed experts it touches + the KV it reads (Hyperparameters.attention_read_bytes:
  sparse attention (DSA, MSA) reads only the selected tokens' KV plus every token's index key). With
  top-k of E experts and T
  tokens in the step, a MoE layer touches E * (1 - (1 - k/E)^T) distinct experts in expectation.
  FLOPs: 2 x active params per token (GEMMs, at the preset's tensor peak) + attention
  (Hyperparameters.attention_flops_per_token / prefill_attention_flops, BF16 peak: GQA 4 x heads x
  head_dim x context per layer, MLA in absorbed form, sparse layers capped at the selected tokens)
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
from bench.planner.efficiency import Curves, curves_for

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
    """Engine factors and fixed costs on top of the GPU's kernel curves; see configs/roofline.yaml.

    With `curves` (bench.planner.efficiency; filled per GPU by `efficiency_for`), bandwidth_efficiency
    and compute_efficiency are ENGINE multipliers on the measured kernel fractions (1 = the probe
    kernels); without curves (flat) they are plain fractions of the datasheet peaks.
    """

    bandwidth_efficiency: float = Field(0.8, gt=0, le=2)
    compute_efficiency: float = Field(0.5, gt=0, le=2)
    interconnect_efficiency: float = Field(0.7, gt=0, le=1)
    collective_latency_us: float = Field(10.0, ge=0)
    inter_node_latency_us: float = Field(0.0, ge=0)
    step_overhead_ms: float = Field(1.0, ge=0)
    mtp_layers_per_draft_token: float = Field(1.0, ge=0)
    curves: Curves = Field(default_factory=Curves.flat)
    curves_source: str = "flat"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    reserve_gib: float = Field(3.0, ge=0)
    gpus_per_node: int = Field(8, gt=0)
    inter_node_gb_s: float = Field(50.0, gt=0)


FITTED_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms")
# The FEW global parameters fitted on published runs (bench.planner.fit), the same for every GPU/model.
GLOBAL_FIT_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms", "collective_latency_us")
PLANNER_FIT = base.CONFIG_DIR / "planner_fit.yaml"


class ErrorBand(StrictModel):
    """Leave-one-out error of the planner on published runs: predicted / published ratios."""

    n_points: int = Field(ge=0)
    median_ratio: float = Field(gt=0)
    worst_ratio: float = Field(gt=0, description="the ratio farthest from 1 (either side)")
    typical_factor: float = Field(ge=1, description="exp(median |log ratio|): x/÷ this is the typical error")
    worst_factor: float = Field(ge=1, description="exp(max |log ratio|)")


class PlannerFit(StrictModel):
    """configs/planner_fit.yaml, written by `maas-bench plan --check-published --write-fit`."""

    params: dict[str, float]
    band: dict[str, ErrorBand] = Field(default_factory=dict, description="output_tok_s, tpot_ms")
    points: list[str] = Field(default_factory=list)
    fitted_on: str = ""
    source: str = ""

    def band_text(self) -> str:
        """'estimate, typically within x1.2 (worst x1.5) of published GPU runs (leave-one-out, 6 points)'."""
        t, p = self.band.get("output_tok_s"), self.band.get("tpot_ms")
        if t is None or p is None:
            return "estimate (no published-run error band fitted)"
        return (f"estimate: throughput typically within x{t.typical_factor:.2f} (worst x{t.worst_factor:.2f}), "
                f"TPOT x{p.typical_factor:.2f} (worst x{p.worst_factor:.2f}) of published GPU runs "
                f"(leave-one-out, {t.n_points} points)")


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
    kernel_curves: dict[str, Curves] = Field(default_factory=dict)
    fit: PlannerFit | None = None

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
    cfg = load_config("roofline.yaml", RooflineConfig, path=path,
                      keyed=("defaults", "per_gpu", "quantizations", "calibrated", "kernel_curves"),
                      shape="a roofline file must be a YAML mapping (defaults, per_gpu, quantizations, calibrated)")
    if path is None and cfg.fit is None:
        fit = load_planner_fit()
        if fit is not None:
            cfg = cfg.model_copy(update={"fit": fit})
    return cfg


def load_planner_fit(path: Path | None = None) -> PlannerFit | None:
    """The global fit on published runs (configs/planner_fit.yaml), None when it was never written."""
    path = Path(path or PLANNER_FIT)
    if not path.exists():
        return None
    data = base.read_yaml(path)
    try:
        fit = PlannerFit.model_validate(data)
    except ValidationError as e:
        raise UserInputError(base.format_validation_error(path, e, PlannerFit)) from None
    bad = [k for k in fit.params if k not in GLOBAL_FIT_FIELDS]
    if bad:
        raise UserInputError(f"{path}: params.{bad[0]}: unknown; allowed: {', '.join(GLOBAL_FIT_FIELDS)}")
    return fit


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


def efficiency_for(gpu_id: str, quant: str, cfg: RooflineConfig | None = None,
                   hbm_gb_s: float | None = None) -> tuple[Efficiency, str]:
    """Factors for a gpu/quant pair and where they came from.

    Lookup: defaults <- the global fit on published runs (`fit`) <- per_gpu[gpu] <- calibrated[gpu/quant];
    the kernel curves are the GPU's own when measured, else the rule of bench.planner.efficiency on its
    HBM bandwidth (`hbm_gb_s`, else configs/hardware.yaml). Source: "default", "published-fit" or
    "calibrated:<key>"; how the curves were obtained is `Efficiency.curves_source`.
    """
    cfg = cfg or load_roofline_config()
    eff = cfg.defaults.model_dump()
    source = "default"
    if cfg.fit is not None:
        eff.update(cfg.fit.params)
        source = "published-fit"
    eff.update(cfg.per_gpu.get(gpu_id, {}))
    key = calibration_key(gpu_id, quant)
    if key in cfg.calibrated:
        eff.update({f: getattr(cfg.calibrated[key], f) for f in FITTED_FIELDS})
        source = f"calibrated:{key}"
    if gpu_id in cfg.kernel_curves:
        curves, how = cfg.kernel_curves[gpu_id], f"measured:{gpu_id}"
    else:
        if hbm_gb_s is None:
            try:
                hbm_gb_s = float(load_hardware().gpu(gpu_id).hbm_gb_s)
            except UserInputError:
                hbm_gb_s = None
        curves, how = curves_for(hbm_gb_s, cfg.kernel_curves) if hbm_gb_s else (Curves.flat(), "flat")
    eff.update(curves=curves, curves_source=how)  # how the curves were obtained: Efficiency.curves_source
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
        """KV-cache bytes of one token on one GPU (the formula per attention type is in the catalog)."""
        return self.hp.kv_bytes_per_token(self.quant.kv_bits / 8, tp=self.tp)

    # one engine step, at efficiency 1 -----------------------------------------------------
    def step_raw(self, n_dec: float, ctx: float, n_pre: float = 0.0, spec_tokens: int = 0) -> StepRaw:
        """Per-GPU seconds for one step at the GPU's kernel curves (memory, compute) plus comm seconds
        (flat curves = 100% of every peak).

        n_dec sequences decode one token each at mean context ctx; n_pre prompt tokens of ONE
        prompt are prefilled (causal attention over n_pre/2 on average). With `spec_tokens` K > 0
        each decoding sequence verifies K+1 tokens: the same weights, (K+1)x the GEMM, attention and
        logits FLOPs, KV read once per sequence over ctx+K tokens (the K+1 queries share it); the K
        draft passes are `draft_raw`.
        """
        hp, q, tp = self.hp, self.quant, self.tp
        n_q = n_dec * (spec_tokens + 1)  # query tokens of the decoding sequences
        ctx = ctx + spec_tokens if n_dec > 0 else ctx
        tokens = n_q + n_pre
        wb = q.weight_bits / 8
        routed_active = hp.num_moe_layers * hp.num_experts_per_tok * hp.expert_params()
        always_params = hp.active_params() - routed_active
        touched = expected_experts_touched(hp.n_routed_experts, hp.num_experts_per_tok, tokens)
        routed_bytes = hp.num_moe_layers * touched * hp.expert_params() * q.expert_bits / 8
        lm_head_bytes = hp.vocab_size * hp.hidden_size * 2.0
        kv_bytes_per_gpu = n_dec * hp.attention_read_bytes(ctx, q.kv_bits / 8, tp=tp)
        c, hbm = self.eff.curves, self.gpu.hbm_gb_s * 1e9
        memory_s = ((always_params * wb / tp) / (hbm * c.dense_bw_fraction(tokens, q.weight_bits))
                    + (lm_head_bytes / tp) / (hbm * c.dense_bw_fraction(tokens, 16))
                    + (routed_bytes / tp) / (hbm * c.expert_bw_fraction(tokens, q.expert_bits))
                    + c.attention_s(kv_bytes_per_gpu, self.gpu.hbm_gb_s, hp.num_hidden_layers))

        logits_tokens = n_q + (1 if n_pre > 0 else 0)
        gemm_flops = 2.0 * hp.active_params() * tokens + 2.0 * hp.hidden_size * hp.vocab_size * logits_tokens
        # routed experts kept in BF16 (partial INT8) run their GEMMs on the BF16 units
        bf16_gemm_flops = 2.0 * routed_active * tokens if q.routed_expert_bits is not None else 0.0
        attn_flops = n_q * hp.attention_flops_per_token(ctx) + hp.prefill_attention_flops(n_pre)
        peak, prec = self.gpu.tflops(q.compute)
        compute_s = ((gemm_flops - bf16_gemm_flops) / (peak * 1e12 * c.gemm_fraction(prec, tokens))
                     + (attn_flops + bf16_gemm_flops) / (self.gpu.tflops_bf16 * 1e12 * c.gemm_fraction("bf16", tokens))
                     ) / tp
        return StepRaw(memory_s=memory_s, compute_s=compute_s, comm_s=self.comm_s(tokens))

    def draft_raw(self, n_dec: float, ctx: float, spec_tokens: int) -> StepRaw:
        """The K draft passes of speculative decoding, per GPU.

        Assumption (stated once, here): each draft token costs `mtp_layers_per_draft_token` (1 = GLM /
        DeepSeek MTP: one extra decoder layer; vLLM runs the MTP module K times) passes of ONE average
        decoder layer of the model over the n_dec sequences (its weights with the experts n_dec tokens
        touch, its KV, its collectives) plus the shared LM head for the draft's logits. EAGLE heads are
        smaller (one dense layer); for them this is an upper bound.
        """
        if spec_tokens <= 0 or n_dec <= 0:
            return StepRaw(0.0, 0.0, 0.0)
        layers = self.hp.num_hidden_layers
        base = self.step_raw(n_dec, ctx)
        lm = self._lm_head_raw(n_dec)
        n = spec_tokens * self.eff.mtp_layers_per_draft_token
        return StepRaw(memory_s=n * (base.memory_s - lm.memory_s) / layers + spec_tokens * lm.memory_s,
                       compute_s=n * (base.compute_s - lm.compute_s) / layers + spec_tokens * lm.compute_s,
                       comm_s=n * base.comm_s / layers)

    def _lm_head_raw(self, n_tokens: float) -> StepRaw:
        """The LM head's share of a step over n_tokens (BF16 weights; logits GEMM at the preset's peak)."""
        c, hp = self.eff.curves, self.hp
        lm_bytes = hp.vocab_size * hp.hidden_size * 2.0 / self.tp
        flops = 2.0 * hp.hidden_size * hp.vocab_size * n_tokens / self.tp
        peak, prec = self.gpu.tflops(self.quant.compute)
        return StepRaw(memory_s=lm_bytes / (self.gpu.hbm_gb_s * 1e9 * c.dense_bw_fraction(n_tokens, 16)),
                       compute_s=flops / (peak * 1e12 * c.gemm_fraction(prec, n_tokens)), comm_s=0.0)

    def collective_latency_s(self) -> float:
        """Fixed latency of one collective: collective_latency_us per log2(tp) step (a one-shot /
        tree all-reduce's hops: 1 at tp 2, 3 at tp 8), plus inter_node_latency_us when the group
        spans nodes."""
        e = self.eff
        lat = e.collective_latency_us * max(math.log2(self.tp), 1.0)
        if self.tp > e.gpus_per_node:
            lat += e.inter_node_latency_us
        return lat * 1e-6

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
        lat = self.collective_latency_s()
        allreduce = ring * msg / bw + lat
        L, n_moe = self.hp.num_hidden_layers, self.hp.num_moe_layers
        if self.ep and n_moe:
            # dispatch + combine: each token's k expert copies; (tp-1)/tp of them leave the GPU
            a2a = 2.0 * (self.hp.num_experts_per_tok * msg * (self.tp - 1) / self.tp / bw + lat)
            return L * allreduce + (L - n_moe) * allreduce + n_moe * a2a
        return 2 * L * allreduce


@dataclass(frozen=True)
class StepRaw:
    """Seconds of one step at the GPU's kernel curves (flat curves: 100% of HBM / tensor peak), and
    its communication seconds; the engine factors divide the first two in `time_s`."""

    memory_s: float
    compute_s: float
    comm_s: float

    def time_s(self, bw_eff: float, compute_eff: float, overhead_s: float) -> float:
        return max(self.memory_s / bw_eff, self.compute_s / compute_eff) + self.comm_s + overhead_s

    def plus(self, other: StepRaw) -> StepRaw:
        """Two passes run back to back in one step (verify + drafts): their terms add."""
        return StepRaw(self.memory_s + other.memory_s, self.compute_s + other.compute_s, self.comm_s + other.comm_s)

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
    tokens_per_step: float = 1.0  # tokens each decoding sequence emits per step (speculation: L)


def point_raw(dep: Deployment, isl: int, osl: int, concurrency_per_replica: float, max_seqs: int,
              spec_tokens: int = 0, acceptance_length: float = 1.0, *, cached_share: float = 0.0) -> PointRaw:
    """Raw steps of one curve point; with speculation (K = spec_tokens, L = acceptance_length) a decode
    step is the verify step over B x (K+1) tokens plus K draft passes, and it emits B x L tokens.
    `cached_share` c (prefix-cache hits, issue 15): only (1 - c) x isl prompt tokens are prefilled; the
    context the decode reads is still the whole prompt."""
    n_pre = isl * (1.0 - cached_share)
    batch = float(min(concurrency_per_replica, max_seqs))
    ctx = isl + osl / 2.0
    dec = max(batch - 1.0, 0.0)
    return PointRaw(
        concurrency_per_replica=concurrency_per_replica, batch=batch, osl=osl,
        decode=dep.step_raw(batch, ctx, spec_tokens=spec_tokens).plus(dep.draft_raw(batch, ctx, spec_tokens)),
        mixed=dep.step_raw(dec, ctx, n_pre=n_pre, spec_tokens=spec_tokens).plus(dep.draft_raw(dec, ctx, spec_tokens)),
        prefill_marginal=_marginal(dep, n_pre), tokens_per_step=float(acceptance_length),
    )


def _marginal(dep: Deployment, isl: float) -> StepRaw:
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
    tpot = (raw.decode.time_s(bw_eff, compute_eff, overhead_s) / raw.tokens_per_step
            + max(b - 1.0, 0.0) / raw.osl * marginal)
    ttft0 = raw.mixed.time_s(bw_eff, compute_eff, overhead_s)
    served = ttft0 + (raw.osl - 1) * tpot
    wait = max(raw.concurrency_per_replica / b - 1.0, 0.0) * served
    return Latencies(tpot, ttft0 + wait, served + wait, served)
