"""Commands that answer money questions without a GPU: cost, margin, plan, calibrate.

Argument plumbing and printing only: the numbers come from bench.econ (queries, margin), the estimate
from bench.planner.estimate, the catalogs from bench.config. SLOs use the one syntax of
bench.config.slo (`--slo 'ttft_ms<=2000,tpot_ms_p99<=50'`, default percentile p90); the old
`--slo-ttft-ms/--slo-tpot-ms/--slo-percentile` flags are gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.cli.output import print_json, print_table, say
from bench.econ.queries import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
from bench.errors import UserInputError

SLO_HELP = "SLO 'metric[_pNN]<=ms,...' (metrics ttft_ms, tpot_ms, itl_ms, e2el_ms; default p90), e.g. 'tpot_ms<=50'."


def _slo(text: str | None) -> Any:
    from bench.config.slo import Slo, parse_slo

    return parse_slo(text) if text else Slo()


def _load_points(results: Path) -> Any:
    """Points table of a run dir (bench.sweep.store.load_results), or of a parquet file."""
    from bench.sweep.store import load_results

    try:
        return load_results(results)
    except FileNotFoundError as e:
        raise UserInputError(f"--results: {e}") from None


def cost(
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml, e.g. h100."),
    tier: str | None = typer.Option(None, "--tier", help="Rental tier or 'tco' (default: every tier)."),
    tok_s_per_gpu: float = typer.Option(..., "--tok-s-per-gpu", help="Tokens/s per GPU (cost is per M of these)."),
    utilization: float = typer.Option(1.0, "--utilization", help="Fleet utilization in (0, 1]; cost x 1/U."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the tier rate."),
    joules_per_token: float | None = typer.Option(None, "--joules-per-token", help="Adds energy $/M tokens."),
    usd_per_kwh: float = typer.Option(0.08, "--usd-per-kwh", help="Electricity price for --joules-per-token."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """$/M tokens for a GPU at a rental tier or owned TCO, at a given throughput and utilization."""
    from bench.config.hardware import load_hardware
    from bench.econ import queries as q

    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    rows = q.cost_rows(catalog, gpu, tier, tok_s_per_gpu, utilization, usd_per_gpu_hour=usd_per_gpu_hour,
                       joules_per_token=joules_per_token, usd_per_kwh=usd_per_kwh, fx=fx)
    if json_out:
        print_json(rows)
    else:
        print_table("Cost per million tokens (sources: --json)", rows, [c for c in rows[0] if c != "source"])


def margin(
    price: str = typer.Option(..., "--price", help="Price-book entry <model>@<provider>, e.g. glm-4.5-air@zai."),
    results: Path | None = typer.Option(None, "--results", help="Run dir: margin of every measured point."),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help="What-if: output tok/s per GPU."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id for the $/GPU-hour (what-if mode)."),
    tier: str = typer.Option("neocloud", "--tier", help="Rental tier or 'tco'."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    utilization: float = typer.Option(1.0, "--utilization", help="Fleet utilization in (0, 1]."),
    input_tokens: float | None = typer.Option(
        None, "--input-tokens", help=f"Input tokens/request (default {DEFAULT_INPUT_TOKENS:g})."
    ),
    output_tokens: float | None = typer.Option(
        None, "--output-tokens", help=f"Output tokens/request (default {DEFAULT_OUTPUT_TOKENS:g})."
    ),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    target_margin: float = typer.Option(0.0, "--target-margin", help="Gross margin the break-evens aim at."),
    price_decline: list[float] = typer.Option([0.5, 0.8], "--price-decline", help="Yearly list-price cut(s)."),
    years: int = typer.Option(1, "--years", help="Years of price decline to show."),
    hw_decline: float = typer.Option(0.0, "--hw-decline", help="Yearly $/GPU-hour decline."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Tornado rows: margin vs each input +-20%."),
    prefill_fraction: float = typer.Option(0.0, "--prefill-fraction", help="GPU-time share of prefill (cache)."),
    curve: bool = typer.Option(False, "--curve", help="Margin at utilization 0.05..1."),
    slo: str | None = typer.Option(None, "--slo", help="Results mode: " + SLO_HELP),
    subscription_fee: float | None = typer.Option(None, "--subscription-fee", help="Monthly plan fee."),
    fee_currency: str = typer.Option("USD", "--fee-currency", help="USD | CNY."),
    requests_per_month: float | None = typer.Option(None, "--requests-per-month", help="(Median) requests/month."),
    requests_sigma: float = typer.Option(0.0, "--requests-sigma", help="Lognormal spread of requests/month."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Gross margin at a price-book entry: of measured points (--results) or a given throughput."""
    from bench.config.hardware import convert_to_usd, load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import fleet
    from bench.econ import queries as q

    the_slo = _slo(slo)
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    entry = load_price_book().get(price)
    if results is not None:
        if tok_s_per_gpu is not None:
            raise UserInputError("give either --tok-s-per-gpu or --results, not both")
        rate = None if usd_per_gpu_hour is None and gpu is None else q.gpu_rate(catalog, gpu, tier,
                                                                                usd_per_gpu_hour, fx)[0]
        m = q.margin_of_points(_load_points(results), entry, utilization, the_slo, input_tokens=input_tokens,
                               output_tokens=output_tokens, cached_share=cached_share, usd_per_gpu_hour=rate,
                               usd_per_cny=fx)
        if json_out:
            print_json({"price": price, "utilization": utilization, "slo": str(the_slo), "points": m.rows,
                        "best_under_slo": m.best})
            return
        slo_cols = [t.column for t in the_slo.terms] or ["ttft_ms_p90", "tpot_ms_p90"]
        cols = ["point_id", "model", "quantization", "gpu_count", "concurrency", "request_rate",
                "output_tok_s_per_gpu", *dict.fromkeys(slo_cols), "cost_usd_per_m_output_tokens", "gross_margin",
                "meets_slo"]
        print_table(f"Margin per point at {price}, U={utilization:g}", m.rows, cols)
        slo_text = the_slo.describe() if the_slo else "no SLO"
        say(f"best under SLO ({slo_text}): {m.best['point_id']} gross margin {m.best['gross_margin']:.1%}"
            if m.best else f"no point meets the SLO ({slo_text})")
        return
    if slo is not None:
        raise UserInputError("--slo needs --results (a what-if throughput has no latency to check)")
    if tok_s_per_gpu is None:
        raise UserInputError("give --tok-s-per-gpu (what-if) or --results (measured points)")
    rate, rate_src = q.gpu_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    mix = q.traffic_mix(input_tokens, output_tokens, cached_share)
    inputs = {
        "price": price, "currency": entry.currency, "rate": rate_src, "usd_per_gpu_hour": rate,
        "output_tok_s_per_gpu": tok_s_per_gpu, "utilization": utilization, "input_tokens": mix.input_tokens,
        "cached_share": mix.cached_share, "output_tokens": mix.output_tokens,
    }
    subscription = None
    if subscription_fee is not None or requests_per_month is not None:
        if subscription_fee is None or requests_per_month is None:
            raise UserInputError("a subscription needs both --subscription-fee and --requests-per-month")
        if fee_currency not in ("USD", "CNY"):
            raise UserInputError(f"--fee-currency must be one of USD, CNY (got {fee_currency!r})")
        fee_usd = convert_to_usd(subscription_fee, fee_currency, fx, what="--subscription-fee")
        subscription = fleet.SubscriptionQuery(fee_usd, requests_per_month, requests_sigma)
    out: dict[str, Any] = {
        "inputs": inputs,
        **fleet.what_if(
            mix, entry, tok_s_per_gpu, rate, utilization, target_margin=target_margin, years=years,
            price_declines=price_decline, hw_decline=hw_decline, sensitivity=sensitivity,
            prefill_fraction=prefill_fraction, curve=curve, subscription=subscription, usd_per_cny=fx,
        ),
    }
    if json_out:
        print_json(out)
        return
    print_table(f"Margin at {price}", [{**inputs, **out["margin"]}], [
        "price", "rate", "usd_per_gpu_hour", "output_tok_s_per_gpu", "utilization", "input_tokens", "cached_share",
        "output_tokens", "revenue_usd_per_request", "cost_usd_per_request", "gross_margin",
        "margin_usd_per_m_tokens", "cost_usd_per_m_output_tokens"])
    print_table(f"Break-even for gross margin {target_margin:g}", [out["break_even"]])
    for d, rows in out["price_decline"].items():
        print_table(f"Price falls {float(d):.0%} a year (hardware {hw_decline:.0%} a year)", rows)
    if sensitivity:
        print_table("Sensitivity of gross margin (tornado)", out["sensitivity"])
    if curve:
        print_table("Gross margin vs utilization", out["curve"])
    if "subscription" in out:
        print_table("Subscriber", [out["subscription"]["one_subscriber"]])
        if "population" in out["subscription"]:
            print_table(f"Subscribers (lognormal requests, sigma {requests_sigma:g})",
                        [out["subscription"]["population"]])


PLAN_COLUMNS = ["model", "gpu", "gpus_per_replica", "rate", "output_tok_s_per_gpu", "throughput_source",
                "requests_per_day", "gpus_busy_avg", "replicas", "gpus", "avg_utilization", "monthly_cost_usd",
                "cost_usd_per_m_tokens", "monthly_revenue_usd", "gross_margin"]


def plan(
    tokens_per_day: float | None = typer.Option(
        None, "--tokens-per-day", help="Input + output tokens per day (optional for the estimate)."
    ),
    model: str | None = typer.Option(None, "--model", help="Catalog model (filters --results)."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml."),
    count: int = typer.Option(1, "--count", help="GPUs per replica (e.g. 8 for TP8)."),
    quant: str | None = typer.Option(None, "--quant", help="Quantization (filters --results)."),
    tier: str = typer.Option("neocloud", "--tier", help="Rental tier or 'tco'."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help="SLO-feasible output tok/s per GPU."),
    results: Path | None = typer.Option(None, "--results", help="Run dir: best measured point under the SLO."),
    price: str | None = typer.Option(None, "--price", help="Price-book entry for revenue and margin."),
    input_tokens: float = typer.Option(DEFAULT_INPUT_TOKENS, "--input-tokens", "--isl",
                                       help="Input tokens per request."),
    output_tokens: float = typer.Option(DEFAULT_OUTPUT_TOKENS, "--output-tokens", "--osl",
                                        help="Output tokens per request."),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    peak_to_average: float = typer.Option(1.0, "--peak-to-average", help="Peak / average traffic, >= 1."),
    max_utilization: float = typer.Option(1.0, "--max-utilization", help="Utilization allowed at peak."),
    slo: str | None = typer.Option(None, "--slo", help=SLO_HELP + " The estimate reads every term as a limit "
                                   "on its point estimate (it has no percentiles)."),
    compare: bool = typer.Option(False, "--compare", help="Estimate: compare H100/H200/H20/B200/910B x quants."),
    tp: int | None = typer.Option(None, "--tp", help="Estimate: tensor-parallel size (default --count)."),
    ep: bool = typer.Option(False, "--ep", help="Estimate: expert parallelism over the TP group."),
    kv_bits: float | None = typer.Option(None, "--kv-bits", help="Estimate: KV-cache bits (16, 8)."),
    concurrency: list[int] | None = typer.Option(
        None, "--concurrency", help="Estimate: concurrency levels (repeat; default 1..256)."
    ),
    private_usd_per_year: float | None = typer.Option(
        None, "--private-usd-per-year", help="Also price the fleet as a private deployment."
    ),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fleet sizing: GPUs, monthly cost and margin to serve --tokens-per-day at an SLO-feasible throughput.

    Throughput: --tok-s-per-gpu (given), --results (the best measured point under --slo) or, when
    neither is given, the analytical roofline estimate for --model/--gpu/--count/--quant.
    """
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import fleet
    from bench.econ import queries as q
    from bench.econ.cost import require_positive

    the_slo = _slo(slo)
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    if gpu is not None:
        catalog.gpu(gpu)
    if tok_s_per_gpu is not None and results is not None:
        raise UserInputError("give either --tok-s-per-gpu or --results, not both")
    est_out = None
    if tok_s_per_gpu is not None:
        tok, source = require_positive("tok_s_per_gpu", tok_s_per_gpu), "given (--tok-s-per-gpu)"
    elif results is not None:
        best = q.measured_throughput(_load_points(results), the_slo, model=model, gpu=gpu, quant=quant)
        tok, source = float(best["output_tok_s_per_gpu"]), f"measured: {results} point {best.get('point_id')}"
    else:
        est_out = _plan_estimate(
            model, gpu, count, quant, input_tokens, output_tokens, the_slo, tp, ep, kv_bits,
            concurrency, compare, tier, price, cached_share, usd_per_gpu_hour, catalog, fx,
        )
        best = est_out["best_under_slo"]
        if tokens_per_day is None or best is None:
            print_json({"estimate": est_out}) if json_out else _print_estimate(est_out)
            if tokens_per_day is not None:
                raise UserInputError("no estimated point meets the SLO: no fleet to size; relax --slo")
            return
        tok = best["output_tok_s_per_gpu"]
        source = f"estimate (roofline; best point under SLO: concurrency {best['concurrency']})"
    if tokens_per_day is None:
        raise UserInputError("--tokens-per-day is required with --tok-s-per-gpu or --results")
    rate, rate_src = q.gpu_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    entry = load_price_book().get(price) if price is not None else None
    fp = fleet.fleet_size(
        tokens_per_day, q.traffic_mix(input_tokens, output_tokens, cached_share), tok, rate,
        peak_to_average=peak_to_average, gpus_per_replica=count, max_utilization_at_peak=max_utilization,
        price=entry, usd_per_cny=fx,
    )
    row = {"model": model, "gpu": gpu, "gpus_per_replica": count, "rate": rate_src, "usd_per_gpu_hour": rate,
           "output_tok_s_per_gpu": tok, "throughput_source": source, "price": price, **fp.to_dict()}
    out: dict[str, Any] = {"plan": row}
    if est_out is not None:
        out["estimate"] = est_out
        if not json_out:
            _print_estimate(est_out)
    if private_usd_per_year is not None:
        out["private_deployment"] = fleet.private_deployment(fp.gpus, private_usd_per_year, rate)
    if json_out:
        print_json(out)
        return
    print_table(f"Fleet for {tokens_per_day:.3g} tokens/day", [row], PLAN_COLUMNS)
    if "private_deployment" in out:
        print_table("As a private deployment", [out["private_deployment"]])


def _plan_estimate(
    model: str | None, gpu: str | None, count: int, quant: str | None, isl: float, osl: float,
    slo: Any, tp: int | None, ep: bool, kv_bits: float | None, concurrency: list[int] | None,
    compare: bool, tier: str, price: str | None, cached_share: float, usd_per_gpu_hour: float | None,
    catalog: Any, fx: float | None,
) -> dict[str, Any]:
    """`plan` without --tok-s-per-gpu / --results: the analytical estimate (bench.planner.estimate.plan_estimate).

    The roofline has one value per metric and no itl_ms, so `Slo.point_limits()` refuses an itl_ms
    term (rather than dropping it) and the output carries a note that percentiles are not modelled.
    """
    from bench.config.prices import load_price_book
    from bench.config.slo import POINT_ESTIMATE_NOTE
    from bench.planner import estimate as roofline

    if model is None or gpu is None or quant is None:
        raise UserInputError("the estimate needs --model, --gpu and --quant (or give --tok-s-per-gpu / --results)")
    est = roofline.plan_estimate(
        model, gpu, count, quant, int(isl), int(osl), slo=slo.point_limits(), tp=tp, ep=ep, kv_bits=kv_bits,
        concurrencies=tuple(concurrency) if concurrency else roofline.DEFAULT_CONCURRENCIES, tier=tier,
        price=load_price_book().get(price) if price is not None else None, cached_share=cached_share,
        usd_per_gpu_hour=usd_per_gpu_hour, usd_per_cny=fx,
        compare_gpus=roofline.COMPARE_GPUS if compare else None, catalog=catalog,
    )
    if slo:
        est["slo_text"] = str(slo)
        est["notes"] = [*est["notes"], f"SLO {slo}: {POINT_ESTIMATE_NOTE}"]
    return est


def _print_estimate(e: dict[str, Any]) -> None:
    """Tables of a plan estimate; every title says ESTIMATE so nobody mistakes it for a measurement."""
    say(f"(analytical roofline, not measured): {e['model']} on {e['count']}x{e['gpu']} "
        f"{e['quant']} (tp {e['tp']}{', ep' if e['ep'] else ''}, {e['replicas']} replica(s), GEMMs at "
        f"{e['compute_precision']}), ISL {e['isl']} / OSL {e['osl']}; efficiency factors: {e['efficiency_source']}",
        prefix="ESTIMATE ", prefix_style="bold")
    print_table("Memory fit per GPU (estimate)", [e["memory"]], [
        "weights_gib_per_gpu", "usable_gib_per_gpu", "kv_budget_gib_per_gpu", "kv_kib_per_token_per_gpu",
        "context_tokens", "max_concurrent_seqs", "fits"])
    for n in e["notes"]:
        say(f"note: {n}")
    cols = ["concurrency", "batch_per_replica", "tpot_ms", "ttft_ms", "interactivity_tok_s_user",
            "output_tok_s_per_gpu", "decode_bound", "meets_slo", "usd_per_m_output_tokens"]
    if any("gross_margin" in r for r in e["curve"]):
        cols.append("gross_margin")
    rate = f"{e['tier']} ${e['usd_per_gpu_hour']:.3g}/GPU-h" if e["usd_per_gpu_hour"] else "no rate known"
    print_table(f"Throughput-latency curve (estimate; $ at {rate})", e["curve"], cols)
    best = e["best_under_slo"]
    slo = ", ".join(f"{k}<={v:g}" for k, v in e["slo"].items()) or "none"
    say(f"best under SLO ({slo}, point estimate): concurrency {best['concurrency']}, "
        f"{best['output_tok_s_per_gpu']:.4g} output tok/s/GPU, TPOT {best['tpot_ms']:.4g} ms, "
        f"TTFT {best['ttft_ms']:.4g} ms (estimate)"
        if best else f"no estimated point meets the SLO ({slo}, point estimate)")
    if e["cost_by_tier"]:
        print_table("$/M tokens by price tier at the best point (estimate)", e["cost_by_tier"],
                    [c for c in e["cost_by_tier"][0] if c != "source"])
    if e.get("compare"):
        cols = ["gpu", "quant", "fits", "max_concurrent_seqs", "best_concurrency", "tpot_ms",
                "output_tok_s_per_gpu", "tier", "usd_per_m_output_tokens"]
        cols += ["gross_margin"] if any("gross_margin" in r for r in e["compare"]) else []
        print_table("GPU x quantization (estimate; best point under the SLO; all fields: --json)",
                    e["compare"], cols)


def calibrate(
    results: list[Path] = typer.Argument(..., help="Run dir(s) with measured points."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fit and print; do not write configs/roofline.yaml."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fit roofline efficiency factors per GPU/quantization from measured runs (configs/roofline.yaml)."""
    import pandas as pd

    from bench.planner import calibrate as roofline

    df = pd.concat([_load_points(r) for r in results], ignore_index=True)
    fits = roofline.calibrate(df)
    if not dry_run:
        roofline.save_calibration(fits, source=", ".join(str(r) for r in results))
    rows = [{**f.__dict__, "written": not dry_run} for f in fits]
    if json_out:
        print_json(rows)
    else:
        print_table("Calibrated roofline factors", rows)
