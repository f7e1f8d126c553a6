"""Kernel efficiency as functions, per GPU: what fraction of the datasheet peaks real kernels reach.

Why: a flat bandwidth efficiency of 0.8 read 2-3.6x optimistic against published GPU runs at low
concurrency. Kernel probes on an H200 and an H100 (shared/reference/gpu-kernels.md,
configs/measured/kernels-h200-2026-11-27.json) show that the achieved fraction depends on the
tokens per step, the weight precision, the batch x context of attention, and the GPU itself (the
same MoE layer reaches 0.80 of an H100's 3.35 TB/s but ~0.62 of an H200's 4.8 TB/s). The numbers
live in configs/roofline.yaml (`kernel_curves:`), with their source; this module evaluates them.

The functions (stated once; T = tokens in the engine step, all fractions of the datasheet peak):

- weight streaming, fraction of HBM peak: `dense_bw(T)` for always-used weights (attention
  projections, dense FFNs, shared experts, LM head) and `expert_bw(T)` for routed experts, each
  piecewise linear in log2(T) between the measured token counts and flat outside them, times a
  precision factor for weights narrower than 16 bits (`precision_factor`: fp8 / 8-bit, int4 /
  <= 4.5-bit; FP8 grouped GEMMs reach ~0.87x the BF16 fraction on both GPUs).
- decode attention over the KV cache, seconds per layer: `attention_latency_us` x 1e-6 +
  kv_bytes / (HBM x `attention_bw_max`). A fixed per-call latency is what the measured
  batch x context table shows: 1x2k reaches 0.15 of peak, 1x8k 0.45, 16x2k 0.71, >= 64 x 2k 0.85-0.92
  on the H200, all within a few percent of a 9 us latency + 0.92 of peak (the H100 fits the same 9 us).
  As an efficiency: bytes / (bytes + latency x HBM x max) x max, a function of batch x context.
- GEMM compute, fraction of the tensor peak for the precision: `gemm_max[precision]` x T / (T +
  `gemm_half_tokens`) (0.80-0.83 BF16 / 0.63-0.72 FP8 at M = 4096, 0.61-0.78 BF16 at M = 1024).
- routed-expert GEMM compute (`expert_gemm`, optional): fraction of the tensor peak as a function of
  the tokens per expert t = T x top_k / n_experts (the rows each expert's GEMMs get) and the expert
  width on one rank w (moe_intermediate / tp, or the full width with EP): per precision, per measured
  width, [t, fraction] pairs piecewise linear in log2(t) (flat outside), linear in log2(w) between
  the measured widths (nearest outside). A precision without points falls back fp4/int4 -> fp8 ->
  bf16; curves without `expert_gemm` use `gemm_fraction` (the dense-GEMM curve) as before. Why: a MoE
  prefill splits T tokens into E small GEMMs (64-256 rows each at 2k-8k tokens) and, under TP, cuts
  each expert to a narrow slice (GLM-5 TP8: 256 columns, so the down projection has K = 256); the
  measured grouped GEMMs reach 0.17-0.44 of the BF16 peak where dense GEMMs reach 0.70-0.85.
  DECISION (2026-11-27): the H200 points (configs/measured/prefill-h200-2026-11-27.json) are recorded in
  configs/roofline.yaml but NOT configured, so every GPU keeps the dense curve for experts. Why: they
  are plain-PyTorch grouped GEMMs (torch._grouped_mm / rowwise torch._scaled_grouped_mm), not the
  fused_moe Triton (vLLM ships configs tuned for E=256, N=256 on H200) or DeepGEMM kernels engines run;
  the FP8 one is slower than its own BF16 twin on the TP8 shape (170 vs 369 TFLOPS at 8192 tokens), a
  kernel artifact rather than a bound; and applied directly (H200 points, H100 carried over) they made
  the published-run check worse (within 1.5x: 6 of 8 instead of 7; worst throughput x1.53 instead of
  x1.42, docs/planner.md). The function stays, tested, for a measurement of the engines' kernels.

GPUs not measured: the curves interpolate linearly in log(HBM GB/s) between the measured GPUs
with the nearest bandwidths, clamped to the nearest one outside their range (A100 -> H100 curves,
B200 -> H200 curves, H20 in between). Why HBM: H100 and H200 share the SM array and tensor peaks
and differ in HBM alone, and the same kernels reach a LOWER fraction of the faster memory; the
kernels are latency/occupancy-limited, so faster memory is used less fully. This is a rule, not a
measurement: an estimate on an unmeasured GPU says so in its notes.

`Curves.flat()` (every fraction 1, no latency) reproduces the plain roofline at 100% of peak; the
hand-worked tests use it.
"""

from __future__ import annotations

import math

from pydantic import Field

from bench.config.base import StrictModel
from bench.units import BYTES_PER_GB, us_to_s

# precision factor keys by weight bits: 16 -> 1.0, (4.5, 16) -> "fp8", <= 4.5 -> "int4"
_PRECISION_KEYS = ("fp8", "int4")


class Curves(StrictModel):
    """One GPU's kernel efficiency curves (configs/roofline.yaml kernel_curves.<gpu>)."""

    hbm_gb_s: float = Field(gt=0, description="datasheet HBM of the GPU the curves were measured on")
    dense_bw: list[tuple[float, float]] = Field(min_length=1, description="[tokens per step, fraction]")
    expert_bw: list[tuple[float, float]] = Field(min_length=1, description="[tokens per step, fraction]")
    precision_factor: dict[str, float] = Field(default_factory=dict, description="fp8, int4: x BF16 fraction")
    attention_bw_max: float = Field(gt=0, le=1)
    attention_latency_us: float = Field(ge=0)
    gemm_max: dict[str, float] = Field(default_factory=dict, description="bf16, fp8, int8, fp4 of tensor peak")
    gemm_half_tokens: float = Field(0.0, ge=0)
    expert_gemm: dict[str, dict[float, list[tuple[float, float]]]] = Field(
        default_factory=dict, description="precision -> expert width per rank -> [tokens per expert, fraction]")
    source: str = ""

    @classmethod
    def flat(cls) -> Curves:
        """Every fraction 1 and no latency: the plain roofline at 100% of every peak."""
        return cls(hbm_gb_s=1.0, dense_bw=[(1.0, 1.0)], expert_bw=[(1.0, 1.0)], attention_bw_max=1.0,
                   attention_latency_us=0.0, gemm_max={}, gemm_half_tokens=0.0, source="flat")

    # --- the functions ------------------------------------------------------------------------
    def dense_bw_fraction(self, tokens: float, weight_bits: float) -> float:
        return _interp_log2(self.dense_bw, tokens) * self.precision(weight_bits)

    def expert_bw_fraction(self, tokens: float, weight_bits: float) -> float:
        return _interp_log2(self.expert_bw, tokens) * self.precision(weight_bits)

    def precision(self, weight_bits: float) -> float:
        if weight_bits >= 16:
            return 1.0
        key = "fp8" if weight_bits > 4.5 else "int4"
        return self.precision_factor.get(key, 1.0)

    def attention_s(self, kv_bytes: float, hbm_gb_s: float, calls: int) -> float:
        """Seconds of `calls` decode-attention kernels reading `kv_bytes` in all (0 bytes: no call)."""
        if kv_bytes <= 0 or calls <= 0:
            return 0.0
        return calls * us_to_s(self.attention_latency_us) + kv_bytes / (hbm_gb_s * BYTES_PER_GB * self.attention_bw_max)

    def attention_fraction(self, kv_bytes_per_call: float, hbm_gb_s: float) -> float:
        """The same as a fraction of HBM peak for one call (the batch x context table's metric)."""
        if kv_bytes_per_call <= 0:
            return 0.0
        return kv_bytes_per_call / (hbm_gb_s * BYTES_PER_GB) / self.attention_s(kv_bytes_per_call, hbm_gb_s, 1)

    def gemm_fraction(self, precision: str, tokens: float) -> float:
        top = self.gemm_max.get(precision, self.gemm_max.get("bf16", 1.0))
        if self.gemm_half_tokens <= 0:
            return top
        t = max(tokens, 1.0)
        return top * t / (t + self.gemm_half_tokens)

    def expert_gemm_fraction(self, precision: str, tokens_per_expert: float, width: float, tokens: float) -> float:
        """Routed-expert GEMMs at `tokens_per_expert` rows per expert, `width` columns per rank (module
        docstring); without measured points for the precision chain, the dense curve at `tokens`."""
        chain = {"fp4": ("fp4", "fp8", "bf16"), "int4": ("int4", "fp8", "bf16"), "int8": ("int8", "fp8", "bf16"),
                 "fp8": ("fp8", "bf16")}.get(precision, (precision,))
        by_width = next((self.expert_gemm[p] for p in chain if self.expert_gemm.get(p)), None)
        if not by_width:
            return self.gemm_fraction(precision, tokens)
        widths = sorted(by_width)
        w = min(max(width, widths[0]), widths[-1])
        lo = max(x for x in widths if x <= w)
        hi = min(x for x in widths if x >= w)
        f_lo, f_hi = _interp_log2(by_width[lo], tokens_per_expert), _interp_log2(by_width[hi], tokens_per_expert)
        if hi == lo:
            return f_lo
        return f_lo + (f_hi - f_lo) * math.log2(w / lo) / math.log2(hi / lo)


def _interp_log2(points: list[tuple[float, float]], tokens: float) -> float:
    pts = sorted(points)
    x = math.log2(max(tokens, 1.0))
    xs = [math.log2(max(p[0], 1.0)) for p in pts]
    if x <= xs[0]:
        return pts[0][1]
    for (x0, (_, y0)), (x1, (_, y1)) in zip(zip(xs, pts, strict=True), zip(xs[1:], pts[1:], strict=True), strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return pts[-1][1]


def curves_for(hbm_gb_s: float, measured: dict[str, Curves]) -> tuple[Curves, str]:
    """The curves for a GPU with `hbm_gb_s`, by the rule in the module docstring, and how they were
    obtained ("measured:<gpu>", "interpolated:<a>-<b>", "nearest:<gpu>"; "flat" when none is configured)."""
    if not measured:
        return Curves.flat(), "flat"
    for gid, c in measured.items():
        if abs(c.hbm_gb_s - hbm_gb_s) < 1e-6:
            return c, f"measured:{gid}"
    ordered = sorted(measured.items(), key=lambda kv: kv[1].hbm_gb_s)
    if hbm_gb_s <= ordered[0][1].hbm_gb_s:
        return ordered[0][1], f"nearest:{ordered[0][0]}"
    if hbm_gb_s >= ordered[-1][1].hbm_gb_s:
        return ordered[-1][1], f"nearest:{ordered[-1][0]}"
    for (ga, a), (gb, b) in zip(ordered, ordered[1:], strict=False):
        if a.hbm_gb_s <= hbm_gb_s <= b.hbm_gb_s:
            w = math.log(hbm_gb_s / a.hbm_gb_s) / math.log(b.hbm_gb_s / a.hbm_gb_s)
            return _blend(a, b, w, hbm_gb_s), f"interpolated:{ga}-{gb}"
    return ordered[-1][1], f"nearest:{ordered[-1][0]}"  # unreachable


def _blend(a: Curves, b: Curves, w: float, hbm_gb_s: float) -> Curves:
    """(1-w) a + w b, evaluated at the union of both curves' token counts."""
    def mix(pa: list[tuple[float, float]], pb: list[tuple[float, float]]) -> list[tuple[float, float]]:
        xs = sorted({p[0] for p in pa} | {p[0] for p in pb})
        return [(x, (1 - w) * _interp_log2(pa, x) + w * _interp_log2(pb, x)) for x in xs]

    def mixd(da: dict[str, float], db: dict[str, float]) -> dict[str, float]:
        return {k: (1 - w) * da.get(k, 1.0) + w * db.get(k, 1.0) for k in sorted(set(da) | set(db))}

    return Curves(
        hbm_gb_s=hbm_gb_s, dense_bw=mix(a.dense_bw, b.dense_bw), expert_bw=mix(a.expert_bw, b.expert_bw),
        precision_factor=mixd(a.precision_factor, b.precision_factor),
        attention_bw_max=(1 - w) * a.attention_bw_max + w * b.attention_bw_max,
        attention_latency_us=(1 - w) * a.attention_latency_us + w * b.attention_latency_us,
        gemm_max=mixd(a.gemm_max, b.gemm_max),
        gemm_half_tokens=(1 - w) * a.gemm_half_tokens + w * b.gemm_half_tokens,
        expert_gemm=a.expert_gemm if w < 0.5 or not b.expert_gemm else b.expert_gemm,  # nearest GPU's points
        source=f"interpolated in log(HBM) between {a.source or 'a'} and {b.source or 'b'}",
    )
