"""`maas-bench plan` as one function: the question in, the estimate and the fleet out.

Why a module of its own: the command (bench.cli.plan_cmd) only parses and prints; choosing the throughput
(given, measured or estimated), checking every input's range, the estimate (bench.planner.estimate) and the
fleet sizing (bench.econ.fleet) happen here, in the order the command always made them, so the same
inputs give the same answer and the same first error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserInputError


@dataclass
class PlanQuestion:
    """The command's options, parsed (`slo` an Slo; `results` a loader of the measured points, or None)."""

    tokens_per_day: float | None
    model: str | None
    gpu: str | None
    count: int
    quant: str | None
    tier: str | None
    usd_per_gpu_hour: float | None
    output_tok_s_per_gpu: float | None
    total_tok_s_per_gpu: float | None
    tok_s_per_gpu: float | None
    results: Callable[[], Any] | None
    results_label: str
    price: str | None
    input_tokens: float
    output_tokens: float
    cached_share: float
    utilization: float
    peak_to_average: float
    max_utilization: float
    slo: Any
    compare: bool = False
    tp: int | None = None
    ep: bool = False
    dp_attention: int = 1
    burst: bool = False
    kv_bits: float | None = None
    concurrency: list[int] | None = None
    private_usd_per_year: float | None = None
    usd_per_cny: float | None = None
    spec_tokens: int = 0
    acceptance_length: float = 1.0
    method: str = "simulate"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


@dataclass
class PlanAnswer:
    """`out` is what `--json` prints; `fleet` is None when only the estimate is answered (then `error`, when
    set, is raised after the estimate is shown: a fleet was asked for and no point meets the SLO)."""

    estimate: dict[str, Any] | None = None
    fleet: Any = None
    out: dict[str, Any] = field(default_factory=dict)
    tier_note: str | None = None
    tok_note: str | None = None
    error: str | None = None


def answer_plan(qn: PlanQuestion) -> PlanAnswer:
    """The estimate (without a given or measured throughput) and the fleet for `tokens_per_day`."""
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import bounds, fleet
    from bench.econ import queries as q
    from bench.econ.cache import fleet_usd_per_gpu_hour
    from bench.econ.cost import require_positive, require_utilization

    require_utilization(qn.utilization)
    require_positive("--isl/--input-tokens", qn.input_tokens)
    require_positive("--osl/--output-tokens", qn.output_tokens)
    # every physical input in its documented range (bench/econ/bounds.py)
    bounds.check_all(utilization=qn.utilization, cached_share=qn.cached_share, peak_to_average=qn.peak_to_average,
                     tokens_per_day=qn.tokens_per_day, usd_per_gpu_hour=qn.usd_per_gpu_hour,
                     usd_per_cny=qn.usd_per_cny, output_tok_s_per_gpu=qn.output_tok_s_per_gpu,
                     total_tok_s_per_gpu=qn.total_tok_s_per_gpu)
    bounds.check("input_tokens", qn.input_tokens, "--isl")
    bounds.check("output_tokens", qn.output_tokens, "--osl")
    bounds.check("utilization", qn.max_utilization, "--max-utilization")
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, qn.usd_per_cny)
    if qn.gpu is not None:
        catalog.gpu(qn.gpu)
    # one tier for the estimate, the fleet and the margin (H20 has only 'tco': said, not swapped silently)
    tier, tier_note = q.pick_tier(catalog, qn.gpu, qn.tier) if qn.usd_per_gpu_hour is None else (qn.tier, None)
    mix = q.traffic_mix(qn.input_tokens, qn.output_tokens, qn.cached_share)
    given_tok, tok_note = q.output_tok_s(mix, output=qn.output_tok_s_per_gpu, total=qn.total_tok_s_per_gpu,
                                         deprecated=qn.tok_s_per_gpu)
    if given_tok is not None and qn.results is not None:
        raise UserInputError("give either --output-tok-s-per-gpu / --total-tok-s-per-gpu or --results, not both")
    a = PlanAnswer(tier_note=tier_note, tok_note=tok_note)
    if given_tok is not None:
        flag = "--total-tok-s-per-gpu" if qn.total_tok_s_per_gpu is not None else "--output-tok-s-per-gpu"
        tok, source = given_tok, f"given ({flag})"
    elif qn.results is not None:
        best = q.measured_throughput(qn.results(), qn.slo, model=qn.model, gpu=qn.gpu, quant=qn.quant)
        tok, source = float(best["output_tok_s_per_gpu"]), f"measured: {qn.results_label} point {best.get('point_id')}"
    else:
        a.estimate = est = estimate_for_plan(qn, tier or "tco", catalog, fx)
        best = est["best_under_slo"]
        if qn.tokens_per_day is not None and not est["memory"].get("fits", True):
            mem = est["memory"]
            raise UserInputError(
                f"--model: {qn.model} {qn.quant} does not fit in {qn.gpu} memory with {qn.count} GPU(s) per replica "
                f"(weights {mem.get('weights_gib_per_gpu', float('nan')):.4g} GiB/GPU, usable "
                f"{mem.get('usable_gib_per_gpu', float('nan')):.4g} GiB/GPU): no fleet to size; allowed: more "
                "GPUs (--count/--tp), a smaller --quant, or a GPU with more memory")
        if qn.tokens_per_day is None or best is None:
            if qn.tokens_per_day is not None:
                a.error = "no estimated point meets the SLO: no fleet to size; relax --slo"
            return a
        tok = best["output_tok_s_per_gpu"]
        how = "simulated" if qn.method == "simulate" else "roofline closed form"
        source = f"estimate ({how}; best point under SLO: concurrency {best['concurrency']})"
    if qn.tokens_per_day is None:
        raise UserInputError("--tokens-per-day is required with --output-tok-s-per-gpu / --total-tok-s-per-gpu "
                             "or --results")
    rate, rate_src = q.gpu_rate(catalog, qn.gpu, tier, qn.usd_per_gpu_hour, fx)
    entry = load_price_book().get(qn.price) if qn.price is not None else None
    a.fleet = fp = fleet.fleet_size(
        qn.tokens_per_day, mix, tok, rate, peak_to_average=qn.peak_to_average, gpus_per_replica=qn.count,
        max_utilization_at_peak=qn.max_utilization, price=entry, usd_per_cny=fx,
    )
    row = {"model": qn.model, "gpu": qn.gpu, "gpus_per_replica": qn.count, "rate": rate_src, "usd_per_gpu_hour": rate,
           "output_tok_s_per_gpu": tok, "throughput_source": source, "price": qn.price, **fp.to_dict()}
    row.update(fleet_usd_per_gpu_hour(fp.monthly_revenue_usd, fp.gpus, rate))
    a.out = {"plan": row}
    if a.estimate is not None:
        a.out["estimate"] = a.estimate
    if qn.private_usd_per_year is not None:
        a.out["private_deployment"] = fleet.private_deployment(fp.gpus, qn.private_usd_per_year, rate)
    return a


def estimate_for_plan(qn: PlanQuestion, tier: str, catalog: Any, fx: float | None) -> dict[str, Any]:
    """`plan` without a given or measured throughput: bench.planner.estimate.plan_estimate.

    The simulation gives every percentile, so each SLO term is read at its own (`ttft_ms_p90`); the closed
    form has one value per metric and no itl_ms, so `Slo.point_limits()` refuses an itl_ms term (rather than
    dropping it) and the output carries a note that percentiles are not modelled.
    """
    from bench.config.prices import load_price_book
    from bench.config.slo import POINT_ESTIMATE_NOTE
    from bench.planner import estimate as roofline

    if qn.model is None or qn.gpu is None or qn.quant is None:
        raise UserInputError("the estimate needs --model, --gpu and --quant (or give --output-tok-s-per-gpu / "
                             "--total-tok-s-per-gpu / --results)")
    slo = qn.slo
    limits = slo.point_limits() if qn.method == "closed-form" else {t.column: t.limit_ms for t in slo.terms}
    est = roofline.plan_estimate(
        qn.model, qn.gpu, qn.count, qn.quant, int(qn.input_tokens), int(qn.output_tokens), slo=limits, tp=qn.tp,
        ep=qn.ep, kv_bits=qn.kv_bits,
        concurrencies=tuple(qn.concurrency) if qn.concurrency else roofline.DEFAULT_CONCURRENCIES, tier=tier,
        price=load_price_book().get(qn.price) if qn.price is not None else None, cached_share=qn.cached_share,
        usd_per_gpu_hour=qn.usd_per_gpu_hour, usd_per_cny=fx,
        compare_gpus=roofline.COMPARE_GPUS if qn.compare else None, catalog=catalog,
        spec_tokens=qn.spec_tokens, acceptance_length=qn.acceptance_length, utilization=qn.utilization,
        dp_attention=qn.dp_attention, burst=qn.burst, method=qn.method, max_num_seqs=qn.max_num_seqs,
        max_num_batched_tokens=qn.max_num_batched_tokens,
    )
    if slo:
        est["slo_text"] = str(slo)
        if qn.method == "closed-form":
            est["notes"] = [*est["notes"], f"SLO {slo}: {POINT_ESTIMATE_NOTE}"]
    return est
