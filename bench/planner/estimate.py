"""The planner's answers: a throughput-latency curve for model x GPU x quantization x parallelism,
its best point under an SLO, a GPU x quantization comparison and `plan_estimate` (what
`maas-bench plan` prints without measured points, with money from bench.econ).

Why a module of its own: the formulas (bench.planner.roofline) are physics and stay small; this is
where they are swept over concurrency and turned into rows. Serving model: see roofline's docstring.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bench.config.catalog import Hyperparameters, ModelSpec, get_model
from bench.econ.cost import DEFAULT_UTILIZATION, require_utilization, resolve_usd_per_gpu_hour
from bench.errors import UserInputError
from bench.planner.factors import NO_BAND_TEXT
from bench.planner.roofline import (
    Deployment,
    Efficiency,
    GpuPeaks,
    MemoryFit,
    PointRaw,
    QuantSpec,
    RooflineConfig,
    efficiency_for,
    get_gpu,
    latencies_s,
    load_roofline_config,
    memory_fit,
    point_raw,
    resolve_quant,
)
from bench.units import ms_to_s, s_to_ms

DEFAULT_CONCURRENCIES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMPARE_GPUS = ("h100", "h200", "h20", "b200", "b300", "gb200-nvl72", "gb300-nvl72", "mi300x", "mi355x", "ascend-910b")
COMPARE_QUANTS = ("bf16", "fp8", "int4")


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
    # the scheduler simulation's distribution (None from the closed form, which has one value per metric)
    ttft_ms_p90: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_p90: float | None = None
    tpot_ms_p99: float | None = None
    e2el_ms_p90: float | None = None
    itl_ms_p90: float | None = None
    preemptions: int | None = None
    latency_ms: dict[str, float] | None = None  # every summarize latency column (ttft_ms_p95, tpot_ms_mean, ...)
    method: str = "closed-form"
    source: str = "estimate"


METHODS = ("simulate", "closed-form")


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


def resolve_model(model: str | ModelSpec | Hyperparameters) -> tuple[str, Hyperparameters]:
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
    spec_tokens: int = 0,
    acceptance_length: float = 1.0,
    cached_share: float = 0.0,
    dp_attention: int = 1,
    burst: bool = False,
    method: str = "simulate",
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
) -> Estimate:
    """Memory fit and the throughput-latency curve of `count` GPUs serving `model`.

    `method`: "simulate" (default) runs each concurrency through the scheduler simulation
    (bench.planner.scheduler: queueing, chunked prefill, preemption, every latency percentile) at vLLM's
    default `max_num_seqs` / `max_num_batched_tokens` for the GPU unless given; "closed-form" evaluates the
    serving formulas of bench.planner.roofline (one value per metric, no queue dynamics).

    `tp` defaults to `count` (one replica); with a smaller tp, count/tp replicas split the
    concurrency evenly. `efficiency` overrides the config lookup (defaults / calibrated).
    Speculative decoding: `spec_tokens` K draft tokens per step, `acceptance_length` L tokens
    emitted per sequence per step (1 <= L <= K+1); K = 0 is no speculation.
    `cached_share`: share of each prompt served from a prefix cache; its prefill work is skipped
    (roofline.point_raw), so the curve is an estimate at that hit rate.
    `dp_attention` D > 1: data-parallel attention in D groups of tp/D GPUs (KV per group, attention per
    DP share; bench.planner.deployment.Deployment). `burst`: each concurrency C is ONE wave of C
    requests sent at once (bench.planner.serving.burst_latencies_s), not a steady state.
    """
    check_spec(spec_tokens, acceptance_length)
    if count <= 0:
        raise UserInputError(f"count must be a positive number of GPUs (got {count})")
    if isl <= 0 or osl <= 1:
        raise UserInputError(f"isl must be > 0 and osl > 1 tokens (got isl={isl}, osl={osl})")
    tp = count if tp is None else tp
    if tp <= 0 or count % tp:
        raise UserInputError(f"tp must divide count (got tp={tp}, count={count})")
    if not isinstance(dp_attention, int) or dp_attention < 1 or tp % dp_attention:
        raise UserInputError(f"dp_attention: must be a positive integer that divides tp={tp} (got {dp_attention})")
    if not concurrencies or any(int(c) <= 0 for c in concurrencies):
        raise UserInputError("concurrency values must be positive integers")
    if method not in METHODS:
        raise UserInputError(f"method: one of {', '.join(METHODS)} (got {method!r})")
    cfg = cfg or load_roofline_config()
    name, hp = resolve_model(model)
    gpu_peaks = gpu if isinstance(gpu, GpuPeaks) else get_gpu(gpu)
    q = quant if isinstance(quant, QuantSpec) else resolve_quant(quant, kv_bits, cfg)
    if isinstance(quant, QuantSpec) and kv_bits is not None:
        q = q.model_copy(update={"kv_bits": float(kv_bits)})
    if efficiency is not None:
        eff, eff_source = efficiency, "given"
    else:
        eff, eff_source = efficiency_for(gpu_peaks.id, q.name, cfg, hbm_gb_s=gpu_peaks.hbm_gb_s)
    dep = Deployment(hp=hp, gpu=gpu_peaks, quant=q, tp=tp, ep=ep, eff=eff, dp_attention=dp_attention)
    replicas = count // tp
    fit = memory_fit(dep, isl + osl)
    notes = _notes(dep, fit)
    curve: list[CurvePoint] = []
    if fit.fits and method == "simulate":
        from bench.planner import simulate as sim

        setup = sim.setup(dep, replicas, max_num_seqs=max_num_seqs or sim.vllm_default_max_num_seqs(gpu_peaks, tp),
                          max_model_len=isl + osl + spec_tokens, max_num_batched_tokens=max_num_batched_tokens,
                          prefix_caching=cached_share > 0, spec_tokens=spec_tokens,
                          acceptance_length=acceptance_length, where="plan")
        for c in sorted({int(c) for c in concurrencies}):
            row = sim.simulate_curve_point(setup, isl, osl, c, cached_share=cached_share, burst=burst)
            curve.append(_sim_point(dep, row, c, replicas, fit.max_concurrent_seqs))
        notes.append(f"simulated: vLLM's scheduler (bench/planner/scheduler.py) at max_num_seqs "
                     f"{setup.engine.max_num_seqs * dep.dp_attention}, max_num_batched_tokens "
                     f"{setup.engine.max_num_batched_tokens}, {setup.engine.num_blocks} KV blocks of "
                     f"{setup.engine.block_size} tokens per scheduler; latencies are medians with p90/p99 beside")
    elif fit.fits:
        for c in sorted({int(c) for c in concurrencies}):
            curve.append(_curve_point(dep, isl, osl, c, replicas, fit.max_concurrent_seqs,
                                      spec_tokens, acceptance_length, cached_share, burst))
    if cached_share:
        notes.append(f"prefix cache: {cached_share:.0%} of each prompt is a cache hit, so only {1 - cached_share:.0%} "
                     "of its prefill is computed (estimate; measure with prefix caching on for the real effect)")
    if spec_tokens:
        notes += _spec_notes(dep, curve, spec_tokens, acceptance_length)
    if dp_attention > 1:
        notes.append(f"DP attention: {dp_attention} attention groups of {dep.attn_tp} GPU(s) per replica, each with "
                     "its own sequences' KV and the attention weights; MoE/dense weights over all tp GPUs")
    if burst:
        steady = [p.concurrency for p in curve if p.queued]
        notes.append("burst: each concurrency is one wave of requests sent at once (prefill wave, then decode)"
                     + (f"; at concurrency {', '.join(map(str, steady))} they do not all fit, so the steady state "
                        "is shown" if steady else ""))
    if cfg.fit is not None and efficiency is None:
        notes.append(cfg.fit.band_text(eff.inherited_from))
    _, precision = gpu_peaks.tflops(q.compute)
    return Estimate(
        model=name, gpu=gpu_peaks.id, count=count, tp=tp, ep=ep, replicas=replicas, quant=q.name,
        weight_bits=q.weight_bits, kv_bits=q.kv_bits, compute_precision=precision, isl=isl, osl=osl,
        efficiency=eff.model_dump(), efficiency_source=eff_source, memory=fit, curve=curve, notes=notes,
    )


def check_spec(spec_tokens: int, acceptance_length: float) -> None:
    """K >= 0 and 1 <= L <= K + 1 (one accepted-or-corrected token per step at least, K+1 at most)."""
    if not isinstance(spec_tokens, int) or spec_tokens < 0:
        raise UserInputError(f"spec_tokens: must be an integer >= 0 (got {spec_tokens})")
    if not (1.0 <= acceptance_length <= spec_tokens + 1):  # also rejects NaN
        raise UserInputError(f"acceptance_length: must be between 1 and spec_tokens + 1 = {spec_tokens + 1} "
                             f"(got {acceptance_length})")


def _spec_notes(dep: Deployment, curve: list[CurvePoint], k: int, accept: float) -> list[str]:
    """Say where speculation pays less: the verify step is compute-bound (B x (K+1) tokens)."""
    notes = [f"speculative decoding: {k} draft tokens per step (MTP: {dep.eff.mtp_layers_per_draft_token:g} "
             f"decoder layer(s) + LM head per draft token), acceptance length {accept:g} tokens per step"]
    bound = [p.concurrency for p in curve if p.decode_bound == "compute"]
    if bound:
        notes.append(f"at concurrency {', '.join(map(str, bound))} the verify step (B x {k + 1} tokens) is "
                     "compute-bound: each extra verified token costs FLOPs, so the gain from speculation shrinks")
    return notes


def _curve_point(dep: Deployment, isl: int, osl: int, c: int, replicas: int, max_seqs: int,
                 spec_tokens: int = 0, acceptance_length: float = 1.0, cached_share: float = 0.0,
                 burst: bool = False) -> CurvePoint:
    raw = point_raw(dep, isl, osl, c / replicas, max_seqs, spec_tokens, acceptance_length, cached_share=cached_share,
                    burst=burst)
    return point_from_raw(raw, dep.eff, c, isl, osl, replicas, dep.tp)


def _sim_point(dep: Deployment, row: dict[str, Any], c: int, replicas: int, max_seqs: int) -> CurvePoint:
    """A curve point from a simulated row (bench.measure.metrics.summarize's columns): medians as the
    point values, p90/p99 beside them, throughput over the measured window."""
    e = dep.eff
    batch = float(row["sim_mean_decode_batch"]) * dep.dp_attention  # the simulation's is per scheduler (DP group)
    tpot = row.get("tpot_ms_p50") or math.nan
    return CurvePoint(
        concurrency=c, batch_per_replica=batch, tpot_ms=tpot, ttft_ms=row["ttft_ms_p50"],
        e2el_ms=row["e2el_ms_p50"], interactivity_tok_s_user=row["interactivity_tok_s_user"] or math.nan,
        output_tok_s=row["output_tok_s"], output_tok_s_per_gpu=row["output_tok_s_per_gpu"],  # summarize's own
        total_tok_s_per_gpu=row["total_tok_s_per_gpu"],
        decode_bound=dep.step_raw(max(batch, 1.0), 1.0).bound(e.bandwidth_efficiency, e.compute_efficiency),
        queued=c / replicas > max_seqs or row["sim_preemptions"] > 0,
        ttft_ms_p90=row["ttft_ms_p90"], ttft_ms_p99=row["ttft_ms_p99"], tpot_ms_p90=row.get("tpot_ms_p90"),
        tpot_ms_p99=row.get("tpot_ms_p99"), e2el_ms_p90=row["e2el_ms_p90"], itl_ms_p90=row.get("itl_ms_p90"),
        preemptions=int(row["sim_preemptions"]), method="simulate",
        latency_ms={k: float(v) for k, v in row.items() if k.startswith(("ttft_ms_", "tpot_ms_", "itl_ms_", "e2el_ms_"))
                    and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))},
    )


def point_from_raw(raw: PointRaw, e: Efficiency, c: int, isl: int, osl: int, replicas: int, tp: int) -> CurvePoint:
    """One curve point from its raw steps and the engine factors (the fit on published runs reuses it)."""
    lat = latencies_s(raw, e.bandwidth_efficiency, e.compute_efficiency, ms_to_s(e.step_overhead_ms))
    tpot, ttft, e2el = lat.tpot_s, lat.ttft_s, lat.e2el_s
    out_total = raw.batch * osl / lat.served_e2el_s * replicas  # emitted tokens: L per step via TPOT
    gpus = replicas * tp
    return CurvePoint(
        concurrency=c, batch_per_replica=raw.batch, tpot_ms=s_to_ms(tpot), ttft_ms=s_to_ms(ttft),
        e2el_ms=s_to_ms(e2el), interactivity_tok_s_user=1.0 / tpot, output_tok_s=out_total,
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
    how = dep.eff.curves_source
    if dep.eff.inherited_from:
        notes.append(f"efficiencies inherited from {dep.eff.inherited_from.upper()}: never measured on "
                     f"{dep.gpu.id.upper()} (configs/hardware.yaml efficiency_from; curves {how}); "
                     "the error band below is widened for it")
    elif how.startswith(("interpolated", "nearest")):
        notes.append(f"{dep.gpu.id} kernels are not measured: efficiency curves {how} (rule: "
                     "bench/planner/efficiency.py); expect a wider error than the band below")
    if dep.tp > dep.scale_up_gpus:
        notes.append(f"tp {dep.tp} spans {dep.scale_up_gpus}-GPU scale-up domains: collectives at "
                     f"{dep.scale_out_gb_s:g} GB/s scale-out")
    if dep.gpu.interconnect_gb_s is None and dep.tp > 1:
        notes.append(f"{dep.gpu.id} has no interconnect_gb_s; collectives at {dep.eff.inter_node_gb_s} GB/s")
    return notes


# --- SLO ------------------------------------------------------------------------------------------

# SLO limits come from bench.config.slo (`Slo.point_limits()`): the roofline has one value per
# metric, so every term is a limit on the point estimate whatever its percentile.


def meets_slo(point: CurvePoint, slo: dict[str, float]) -> bool:
    """Every limit met. Keys are metrics (`ttft_ms`: the point value) or columns (`ttft_ms_p90`): a simulated
    point reads the percentile; a closed-form point has one value per metric and reads that."""
    for k, v in slo.items():
        val = (point.latency_ms or {}).get(k, getattr(point, k, None))
        if val is None:
            metric = k.rsplit("_", 1)[0] if k.rsplit("_", 1)[-1] in ("p50", "p90", "p95", "p99", "mean") else k
            val = getattr(point, metric, None)
        if val is None or not val <= v:
            return False
    return True


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
    return resolve_usd_per_gpu_hour(gpu_id, use, catalog, usd_per_cny), use


def _money(tok_out: float, tok_total: float, rate: float | None, price: Any, mix: Any,
           usd_per_cny: float | None, utilization: float) -> dict[str, float | None]:
    """$/M tokens (output; input + output) and, with a price, the margin of one estimated point, at fleet
    utilization U (cost x 1/U, as `maas-bench cost` and `margin` price it): a full-load estimate priced at
    U = 1 would understate a fleet's cost. The row carries `utilization` next to the $ figures."""
    from bench.econ.cost import usd_per_m_tokens
    from bench.econ.margin import Offer, api_margin, break_even_utilization

    if rate is None or tok_out <= 0:
        return {"usd_per_m_output_tokens": None, "usd_per_m_tokens": None, "utilization": utilization}
    out: dict[str, float | None] = {
        "usd_per_m_output_tokens": usd_per_m_tokens(tok_out, rate, utilization),
        "usd_per_m_tokens": usd_per_m_tokens(tok_total, rate, utilization),
        "utilization": utilization,
    }
    if price is not None:
        offer = Offer(mix, price, tok_out, rate, utilization, usd_per_cny)
        m = api_margin(offer)
        out["gross_margin"] = m.gross_margin
        out["revenue_usd_per_gpu_hour"] = m.revenue_usd_per_gpu_hour  # at U, cached tokens at the cached price
        out["cost_usd_per_gpu_hour"] = m.cost_usd_per_gpu_hour
        out["break_even_utilization"] = break_even_utilization(offer)
    return out


def plan_estimate(
    model: str, gpu: str, count: int, quant: str, isl: int, osl: int, *,
    slo: dict[str, float] | None = None, tp: int | None = None, ep: bool = False,
    kv_bits: float | None = None,
    concurrencies: tuple[int, ...] | list[int] = DEFAULT_CONCURRENCIES, tier: str = "neocloud",
    price: Any = None, cached_share: float = 0.0, usd_per_gpu_hour: float | None = None,
    usd_per_cny: float | None = None, compare_gpus: tuple[str, ...] | None = None,
    compare_quants: tuple[str, ...] = COMPARE_QUANTS, catalog: Any = None,
    spec_tokens: int = 0, acceptance_length: float = 1.0, utilization: float = DEFAULT_UTILIZATION,
    dp_attention: int = 1, burst: bool = False, method: str = "simulate", max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
) -> dict[str, Any]:
    """What `maas-bench plan` prints without measured points: the estimated curve, the best point
    under the SLO, $/M tokens at every price tier of the GPU, the gross margin at `price` (a
    PriceEntry), and optionally a GPU x quantization comparison. Every $ and margin figure is at fleet
    utilization `utilization` (default bench.econ.cost's) and every money row says so.
    Every row carries source="estimate"."""
    from bench.config.hardware import load_hardware
    from bench.econ.margin import TrafficMix

    require_utilization(utilization)
    catalog = catalog or load_hardware()
    catalog.gpu(gpu)
    slo = slo or {}
    mix = TrafficMix(float(isl), float(osl), cached_share)
    cfg = load_roofline_config()
    est = estimate(model, gpu, count, quant, isl, osl, concurrencies, tp=tp, ep=ep, kv_bits=kv_bits, cfg=cfg,
                   spec_tokens=spec_tokens, acceptance_length=acceptance_length, cached_share=cached_share,
                   dp_attention=dp_attention, burst=burst, method=method, max_num_seqs=max_num_seqs,
                   max_num_batched_tokens=max_num_batched_tokens)
    best = best_point(est, slo)
    if usd_per_gpu_hour is not None:
        main_rate, main_tier = usd_per_gpu_hour, "given"
    else:
        main_rate, main_tier = _rate_for(catalog, gpu, tier, usd_per_cny)
    curve = []
    for p in est.curve:
        row = asdict(p)
        row["meets_slo"] = meets_slo(p, slo)
        row.update(_money(p.output_tok_s_per_gpu, p.total_tok_s_per_gpu, main_rate, price, mix, usd_per_cny,
                          utilization))
        curve.append(row)
    tiers: list[dict[str, Any]] = []
    if best is not None:
        rates = [("given", usd_per_gpu_hour)] if usd_per_gpu_hour is not None else [
            (t, resolve_usd_per_gpu_hour(gpu, t, catalog, usd_per_cny)) for t in catalog.gpu(gpu).cost_tiers()]
        for t, rate in rates:
            tiers.append({"tier": t, "usd_per_gpu_hour": rate, "concurrency": best.concurrency,
                          "output_tok_s_per_gpu": best.output_tok_s_per_gpu,
                          **_money(best.output_tok_s_per_gpu, best.total_tok_s_per_gpu, rate, price, mix,
                                   usd_per_cny, utilization), "source": "estimate"})
    out: dict[str, Any] = {
        "source": "estimate",
        "model": est.model, "gpu": est.gpu, "count": est.count, "tp": est.tp, "ep": est.ep,
        "replicas": est.replicas, "quant": est.quant, "weight_bits": est.weight_bits, "kv_bits": est.kv_bits,
        "compute_precision": est.compute_precision, "isl": isl, "osl": osl, "slo": slo,
        "tier": main_tier, "usd_per_gpu_hour": main_rate, "utilization": utilization,
        "efficiency_source": est.efficiency_source, "efficiency": est.efficiency,
        "error_band": cfg.fit.band_text(est.efficiency.get("inherited_from")) if cfg.fit is not None else NO_BAND_TEXT,
        "error_band_detail": {k: v.model_dump() for k, v in cfg.fit.band.items()} if cfg.fit is not None else None,
        "spec_tokens": spec_tokens, "acceptance_length": acceptance_length,
        "dp_attention": dp_attention, "burst": burst, "method": method,
        "memory": asdict(est.memory), "notes": est.notes, "curve": curve,
        "best_under_slo": asdict(best) if best is not None else None, "cost_by_tier": tiers,
    }
    if compare_gpus:
        rows = []
        for g in compare_gpus:
            rate, used = _rate_for(catalog, g, tier, usd_per_cny)
            peaks = get_gpu(g)
            for qn in compare_quants:
                e = estimate(model, peaks, count, qn, isl, osl, concurrencies, tp=tp, ep=ep, cfg=cfg,
                             dp_attention=dp_attention, burst=burst, method=method)
                b = best_point(e, slo)
                row = {"gpu": g, "quant": qn, "count": count, "fits": e.memory.fits,
                       "weights_gib_per_gpu": e.memory.weights_gib_per_gpu,
                       "max_concurrent_seqs": e.memory.max_concurrent_seqs,
                       "compute_precision": e.compute_precision,
                       "best_concurrency": b.concurrency if b else None,
                       "tpot_ms": b.tpot_ms if b else None, "ttft_ms": b.ttft_ms if b else None,
                       "ttft_ms_p90": b.ttft_ms_p90 if b else None,
                       "output_tok_s_per_gpu": b.output_tok_s_per_gpu if b else None,
                       "tier": used, "usd_per_gpu_hour": rate, "efficiency_source": e.efficiency_source}
                row.update(_money(b.output_tok_s_per_gpu if b else 0.0, b.total_tok_s_per_gpu if b else 0.0,
                                  rate, price, mix, usd_per_cny, utilization))
                row["source"] = "estimate"
                rows.append(row)
        out["compare"] = rows
    return out
