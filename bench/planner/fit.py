"""The planner against published GPU runs: a global fit of a FEW parameters and its leave-one-out check.

Why: the planner's numbers feed fleet sizes for GPUs the team does not have yet, so its error on real
GPU runs must be known and printed next to every estimate. The kernel curves (bench.planner.efficiency)
are measured priors; on top of them four GLOBAL parameters (the same for every GPU, model and point;
never one per case) describe the engine:

- bandwidth_efficiency: engine kernels vs the probe kernels on weight/KV streaming (multiplier);
- compute_efficiency: the same for GEMM/attention compute (prefill);
- step_overhead_ms: CPU-side cost of one engine step (scheduling, sampling, output processing);
- collective_latency_us: fixed latency of one collective per log2(tp) step.

Fit: weighted least squares on log(predicted / published) output tok/s and TPOT over the rows of
configs/published_runs.yaml with weight > 0 that the catalog can describe, plus a weak prior pulling
each parameter toward its configs/roofline.yaml default (log-space, sigma = ln 3), minimised with a
Nelder-Mead simplex in log space (numpy; scipy is not a dependency). Leave-one-out: every graded row's
prediction comes from a fit on the OTHER rows (`fit_params(..., exclude=row.id)`), so the error band
(configs/planner_fit.yaml) is an out-of-sample error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.atomic import atomic_write_text
from bench.config.catalog import load_models
from bench.config.hardware import HardwareCatalog, load_hardware
from bench.errors import UserInputError
from bench.planner.deployment import Deployment
from bench.planner.estimate import point_from_raw, resolve_model
from bench.planner.factors import (
    GLOBAL_FIT_FIELDS,
    PLANNER_FIT,
    Efficiency,
    ErrorBand,
    PlannerFit,
    RooflineConfig,
    efficiency_for,
    get_gpu,
    load_roofline_config,
    resolve_quant,
)
from bench.planner.published import PublishedRun, load_published_runs
from bench.planner.serving import PointRaw, replica_raw

# log-space box for each parameter and the prior's width
# multipliers on the kernel curves stop where curve x multiplier would pass the datasheet peak
_BOUNDS = {"bandwidth_efficiency": (0.2, 1.4), "compute_efficiency": (0.2, 1.15),
           "step_overhead_ms": (0.01, 30.0), "collective_latency_us": (0.1, 200.0)}
_PRIOR_SIGMA = math.log(3.0)


@dataclass(frozen=True)
class Prepared:
    """A gradable published row with its raw steps at collective latency 0 and 1 us (comm is linear in it)."""

    run: PublishedRun
    raw0: PointRaw
    raw1: PointRaw
    base: Efficiency
    replicas: int
    tp: int
    osl: int
    # log TTFT ~ a + b log(compute_efficiency): the scheduler simulation of the row at three compute
    # efficiencies (`ttft_surrogate`); None when the row publishes no TTFT
    ttft_fit: tuple[float, float] | None = None

    def ttft_ms(self, params: dict[str, float]) -> float | None:
        """The row's TTFT at the global parameters through its surrogate (None without one)."""
        if self.ttft_fit is None:
            return None
        a, b = self.ttft_fit
        return math.exp(a + b * math.log(params["compute_efficiency"]))

    def mode(self) -> str:
        """How the row is modelled: 'dp-attn N' and/or 'burst' (one wave), '' for plain steady state."""
        dp = self.run.attention_groups()
        parts = ([f"dp-attn {dp}"] if dp > 1 else []) + (["burst"] if self.raw0.wave is not None else [])
        return " ".join(parts)

    def predict(self, params: dict[str, float]) -> tuple[float, float]:
        """(deployment output tok/s, TPOT ms) at the global parameters."""
        lat = params.get("collective_latency_us", self.base.collective_latency_us)
        raw = _at_latency(self.raw0, self.raw1, lat)
        eff = self.base.model_copy(update={k: v for k, v in params.items() if k != "collective_latency_us"})
        p = point_from_raw(raw, eff, self.run.concurrency, self.run.isl or 0, self.osl, self.replicas, self.tp)
        return p.output_tok_s, p.tpot_ms


def _at_latency(r0: PointRaw, r1: PointRaw, lat_us: float) -> PointRaw:
    def mix(a: Any, b: Any) -> Any:
        return replace(a, comm_s=a.comm_s + lat_us * (b.comm_s - a.comm_s))
    return replace(r0, decode=mix(r0.decode, r1.decode), mixed=mix(r0.mixed, r1.mixed),
                   prefill_marginal=mix(r0.prefill_marginal, r1.prefill_marginal),
                   wave=mix(r0.wave, r1.wave) if r0.wave is not None and r1.wave is not None else None)


def prepare(run: PublishedRun, cfg: RooflineConfig, hw: HardwareCatalog | None = None) -> Prepared | str:
    """The row ready to predict, or why it cannot be graded (one short reason); `hw` is the hardware
    catalog (read from configs/hardware.yaml when not given)."""
    hw = hw or load_hardware()
    why = run.why_not_gradable(set(load_models()), set(hw.gpus))
    if why:
        return why
    gpu = get_gpu(run.gpu, hw)
    q = resolve_quant(run.preset() or "", run.kv_bits(), cfg)
    base, _ = efficiency_for(gpu.id, q.name, cfg, hbm_gb_s=gpu.hbm_gb_s)
    tp = run.tensor_parallel or run.gpu_count
    if run.gpu_count % tp:
        return f"tp {tp} does not divide {run.gpu_count} GPUs"
    dp = run.attention_groups()
    if tp % dp:
        return f"data_parallel {dp} does not divide tp {tp} (dp_attention)"
    _, hp = resolve_model(run.model)
    osl = run.mean_osl() or 2
    k = run.spec.draft_tokens() if run.spec else 0
    accept = (run.spec.acceptance_length or 1.0) if run.spec else 1.0
    raws = []
    for lat in (0.0, 1.0):
        dep = Deployment(hp=hp, gpu=gpu, quant=q, tp=tp, ep=bool(run.expert_parallel), dp_attention=dp,
                         eff=base.model_copy(update={"collective_latency_us": lat}))
        fit, raw = replica_raw(dep, run.isl or 0, osl, run.concurrency, run.gpu_count // tp, k, min(accept, k + 1.0),
                               burst=run.single_wave())
        if not fit.fits:
            return "does not fit in memory by the planner's memory model"
        raws.append(raw)
    return Prepared(run=run, raw0=raws[0], raw1=raws[1], base=base, replicas=run.gpu_count // tp, tp=tp, osl=osl)


def simulate_row(p: Prepared, params: dict[str, float], cfg: RooflineConfig,
                 hw: HardwareCatalog | None = None) -> dict[str, float | None]:
    """The row through the scheduler simulation at `params`, replayed as the source's benchmark client ran
    it: num_prompts requests at the concurrency from an idle server, no warm-up, no cool-down (the first
    wave arrives at once, which is where most of a published TTFT comes from). max_num_seqs and the token
    budget are the row's when its source states them, else vLLM's defaults for the GPU. SGLang rows run
    through the same vLLM scheduler model (SGLang does not mix prefill into decode batches by default, so
    its prefills pause decoding: expect its TTFT lower and TPOT higher than the model). Returns output
    tok/s, TPOT p50 and TTFT at the published statistic."""
    from bench.planner import simulate as sim

    run = p.run
    hw = hw or load_hardware()
    gpu = get_gpu(run.gpu, hw)
    q = resolve_quant(run.preset() or "", run.kv_bits(), cfg)
    eff = p.base.model_copy(update=params)
    _, hp = resolve_model(run.model)
    k = run.spec.draft_tokens() if run.spec else 0
    accept = min((run.spec.acceptance_length or 1.0) if run.spec else 1.0, k + 1.0)
    dep = Deployment(hp=hp, gpu=gpu, quant=q, tp=p.tp, ep=bool(run.expert_parallel),
                     dp_attention=run.attention_groups(), eff=eff)
    isl = run.isl or 0
    setup = sim.setup(dep, p.replicas, max_num_seqs=run.max_num_seqs or sim.vllm_default_max_num_seqs(gpu, p.tp),
                      max_model_len=isl + p.osl + k, max_num_batched_tokens=run.max_num_batched_tokens,
                      spec_tokens=k, acceptance_length=accept, where=f"published run {run.id}")
    n = run.num_prompts or sim.plan_requests(run.concurrency, False)[0]
    row = sim.simulate_curve_point(setup, isl, p.osl, run.concurrency, requests=n, warmup=0, cooldown=False)
    ttft = run.ttft_ms()
    return {"output_tok_s": row["output_tok_s"], "tpot_ms": row.get("tpot_ms_p50"),
            "ttft_ms": row.get(f"ttft_ms_{ttft[1]}") if ttft else row.get("ttft_ms_p50")}


TTFT_SURROGATE_CE = (0.3, 0.6, 1.15)  # compute efficiencies the surrogate is simulated at (the fit's range)


def ttft_surrogate(p: Prepared, prior: dict[str, float], cfg: RooflineConfig,
                   hw: HardwareCatalog | None = None) -> Prepared:
    """The row with a TTFT surrogate: the scheduler simulation (`simulate_row`) at three compute efficiencies,
    the other parameters at the prior, fitted as log TTFT = a + b log(compute_efficiency).

    Why a surrogate: a published TTFT is set by the prefill queue (the first wave arriving at once, chunked
    prefill), which only the simulation models, but the fit evaluates its loss thousands of times; TTFT is
    prefill time, so it follows the compute efficiency (b near -1) and hardly the others."""
    if p.run.ttft_ms() is None:
        return p
    xs, ys = [], []
    for ce in TTFT_SURROGATE_CE:
        t = simulate_row(p, {**prior, "compute_efficiency": ce}, cfg, hw)["ttft_ms"]
        if t and t > 0:
            xs.append(math.log(ce))
            ys.append(math.log(t))
    if len(xs) < 2:
        return p
    b, a = np.polyfit(xs, ys, 1)
    return replace(p, ttft_fit=(float(a), float(b)))


def _errors(pts: list[Prepared], params: dict[str, float]) -> list[tuple[float | None, ...]]:
    """log(predicted / published) output tok/s, TPOT and TTFT (None where the row does not publish it)."""
    out = []
    for p in pts:
        tok, tpot = p.predict(params)
        t_pub, p_pub = p.run.output_tok_s(), p.run.tpot_ms()
        ttft, f_pub = p.ttft_ms(params), p.run.ttft_ms()
        out.append((math.log(tok / t_pub) if t_pub else None, math.log(tpot / p_pub) if p_pub else None,
                    math.log(ttft / f_pub[0]) if ttft and f_pub else None))
    return out


def fit_params(pts: list[Prepared], prior: dict[str, float], exclude: str | None = None) -> dict[str, float]:
    """The global parameters that best fit the weighted rows, never looking at row `exclude`."""
    train = [p for p in pts if p.run.weight > 0 and p.run.id != exclude]
    names = list(GLOBAL_FIT_FIELDS)
    lo = np.log([_BOUNDS[n][0] for n in names])
    hi = np.log([_BOUNDS[n][1] for n in names])
    x0 = np.clip(np.log([max(prior[n], _BOUNDS[n][0]) for n in names]), lo, hi)
    if not train:
        return {n: float(v) for n, v in zip(names, np.exp(x0), strict=True)}

    def loss(x: np.ndarray) -> float:
        x = np.clip(x, lo, hi)
        params = {n: float(v) for n, v in zip(names, np.exp(x), strict=True)}
        total = 0.0
        for p, errs in zip(train, _errors(train, params), strict=True):
            total += p.run.weight * sum((e or 0.0) ** 2 for e in errs)
        return total + float(np.sum(((x - x0) / _PRIOR_SIGMA) ** 2)) * 0.05

    best = nelder_mead(loss, x0, step=0.4)
    return {n: float(v) for n, v in zip(names, np.exp(np.clip(best, lo, hi)), strict=True)}


def nelder_mead(f: Any, x0: np.ndarray, step: float, iters: int = 400, tol: float = 1e-7) -> np.ndarray:
    """A plain Nelder-Mead simplex (reflection 1, expansion 2, contraction and shrink 0.5)."""
    n = len(x0)
    simplex = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(vals)
        simplex, vals = [simplex[i] for i in order], [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centroid + 2 * (centroid - simplex[-1])
            fe = f(xe)
            simplex[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = xr, fr
        else:
            xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = xc, fc
            else:
                simplex = [simplex[0] + 0.5 * (x - simplex[0]) for x in simplex]
                vals = [f(x) for x in simplex]
    return simplex[int(np.argmin(vals))]


def _band(ratios: list[float]) -> ErrorBand | None:
    if not ratios:
        return None
    logs = [abs(math.log(r)) for r in ratios]
    worst = max(ratios, key=lambda r: abs(math.log(r)))
    return ErrorBand(n_points=len(ratios), median_ratio=round(float(np.median(ratios)), 4),
                     worst_ratio=round(worst, 4), typical_factor=round(math.exp(float(np.median(logs))), 4),
                     worst_factor=round(math.exp(max(logs)), 4))


def check_published(path: Path | None = None, cfg: RooflineConfig | None = None) -> dict[str, Any]:
    """Predicted vs published for every row, each graded by a fit that did not see it (leave-one-out),
    plus the fit on all rows, and median / worst ratios over the graded (weight > 0) rows."""
    runs = load_published_runs(path)
    cfg = cfg or load_roofline_config()
    # the check is independent of an earlier published fit and of the user's own calibrations
    cfg = cfg.model_copy(update={"fit": None, "calibrated": {}})
    prior = {n: getattr(cfg.defaults, n) for n in GLOBAL_FIT_FIELDS}
    hw = load_hardware()
    prepared = {r.id: prepare(r, cfg, hw) for r in runs}
    prepared = {k: ttft_surrogate(p, prior, cfg, hw) if isinstance(p, Prepared) and p.run.weight > 0 else p
                for k, p in prepared.items()}
    pts = [p for p in prepared.values() if isinstance(p, Prepared)]
    full = fit_params(pts, prior)
    rows: list[dict[str, Any]] = []
    for r in runs:
        p = prepared[r.id]
        ttft = r.ttft_ms()
        row: dict[str, Any] = {"id": r.id, "engine": r.engine, "model": r.model, "gpu": f"{r.gpu_count}x{r.gpu}",
                               "weight": r.weight, "published_output_tok_s": r.output_tok_s(),
                               "published_tpot_ms": r.tpot_ms(), "published_ttft_ms": ttft[0] if ttft else None,
                               "ttft_stat": ttft[1] if ttft else None}
        if not isinstance(p, Prepared):
            rows.append({**row, "status": p})
            continue
        loo = fit_params(pts, prior, exclude=r.id) if r.weight > 0 else full
        tok, tpot = p.predict(loo)
        tok_prior, tpot_prior = p.predict(prior)
        row.update(status="graded (leave-one-out)" if r.weight > 0 else "shown (weight 0: not fitted)",
                   predicted_output_tok_s=tok, predicted_tpot_ms=tpot,
                   ratio_output_tok_s=tok / r.output_tok_s() if r.output_tok_s() else None,
                   ratio_tpot_ms=tpot / r.tpot_ms() if r.tpot_ms() else None,
                   prior_ratio_output_tok_s=tok_prior / r.output_tok_s() if r.output_tok_s() else None,
                   prior_ratio_tpot_ms=tpot_prior / r.tpot_ms() if r.tpot_ms() else None,
                   spec=f"K={r.spec.draft_tokens()} L={r.spec.acceptance_length}" if r.spec else "",
                   mode=p.mode(),
                   decode_bound=p.raw0.decode.bound(loo["bandwidth_efficiency"], loo["compute_efficiency"]),
                   fitted_without_it=r.weight > 0, loo_params=loo)
        try:
            simulated = simulate_row(p, loo, cfg, hw)
        except UserInputError as e:
            simulated = {}
            row["sim_error"] = str(e)
        pub = {"output_tok_s": r.output_tok_s(), "tpot_ms": r.tpot_ms(), "ttft_ms": ttft[0] if ttft else None}
        for k, v in simulated.items():
            row[f"sim_{k}"] = v
            row[f"sim_ratio_{k}"] = v / pub[k] if v and pub[k] else None
        rows.append(row)
    graded = [x for x in rows if x.get("fitted_without_it")]
    band = {"output_tok_s": _band([x["ratio_output_tok_s"] for x in graded if x["ratio_output_tok_s"]]),
            "tpot_ms": _band([x["ratio_tpot_ms"] for x in graded if x["ratio_tpot_ms"]]),
            "ttft_ms": _band([x["sim_ratio_ttft_ms"] for x in graded if x.get("sim_ratio_ttft_ms")])}
    sim_band = {k: _band([x[f"sim_ratio_{k}"] for x in graded if x.get(f"sim_ratio_{k}")])
                for k in ("output_tok_s", "tpot_ms")}
    within = [x["id"] for x in graded if all(v is None or 1 / 1.5 <= v <= 1.5
                                             for v in (x["ratio_output_tok_s"], x["ratio_tpot_ms"]))]
    return {"rows": rows, "params": full, "prior": prior, "band": {k: v.model_dump() for k, v in band.items() if v},
            "simulated_band": {k: v.model_dump() for k, v in sim_band.items() if v},
            "graded": len(graded), "within_1_5x": len(within), "fitted_points": [p.run.id for p in pts
                                                                                 if p.run.weight > 0]}


def write_fit(result: dict[str, Any], path: Path | None = None, source: str = "") -> Path:
    """configs/planner_fit.yaml: the global parameters and the leave-one-out band (generated; do not edit)."""
    path = Path(path or PLANNER_FIT)
    if not result["band"]:
        raise UserInputError("check-published: no gradable published point; nothing to write")
    fit = PlannerFit(params={k: round(v, 5) for k, v in result["params"].items()},
                     band={k: ErrorBand(**v) for k, v in result["band"].items()},
                     points=result["fitted_points"], fitted_on=date.today().isoformat(),
                     source=source or "configs/published_runs.yaml via maas-bench plan --check-published --write-fit")
    head = ("# GENERATED by `maas-bench plan --check-published --write-fit` (bench/planner/fit.py); do not edit.\n"
            "# params: the global engine parameters fitted on published GPU runs (meaning: bench/planner/fit.py);\n"
            "# band: the leave-one-out predicted/published ratios that every `plan` estimate prints.\n")
    atomic_write_text(path, head + yaml.safe_dump(fit.model_dump(), sort_keys=False))
    return path
