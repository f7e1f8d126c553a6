"""`maas-bench margin`: gross margin at a price-book entry, of measured points (--results) or of a given
throughput (the what-if form: break-evens, price-decline scenarios, sensitivity, subscriptions, --explain).

Argument plumbing and printing only: the numbers come from bench.econ (queries, margin, fleet.what_if).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.cli import money_options as opts
from bench.cli.output import print_json, print_table, say
from bench.econ.cost import DEFAULT_UTILIZATION
from bench.econ.queries import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
from bench.errors import UserInputError


def cache_note(rows: list[dict[str, Any]], utilization: float) -> str:
    """Which cache-hit rate the margins above use: measured per point, given, or none."""
    from bench.econ.cache import MEASURED

    measured = [r for r in rows if r.get("cached_share_source") == MEASURED]
    given = [r for r in rows if r.get("cached_share_source") not in (MEASURED, "none")]
    parts = [f"revenue and cost per GPU-hour at U={utilization:g}; cached input billed at the cached price"]
    if measured:
        parts.append(f"{len(measured)} point(s) at their MEASURED cache-hit rate (usage cached_tokens; "
                     "cost from the throughput measured at that rate)")
    if given:
        parts.append(f"{len(given)} point(s) at the GIVEN --cached-share (revenue only: no measurement)")
    return "; ".join(parts)


def margin(
    price: str = typer.Option(..., "--price", help="Price-book entry <model>@<provider>, e.g. glm-4.5-air@zai."),
    results: Path | None = typer.Option(None, "--results", help="Run dir: margin of every measured point."),
    output_tok_s_per_gpu: float | None = typer.Option(
        None, "--output-tok-s-per-gpu", help="What-if: " + opts.OUT_TOK_HELP),
    total_tok_s_per_gpu: float | None = typer.Option(
        None, "--total-tok-s-per-gpu", help="What-if: " + opts.TOTAL_TOK_HELP),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=opts.OLD_TOK_HELP, hidden=True),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id for the $/GPU-hour (what-if mode)."),
    tier: str | None = typer.Option(None, "--tier", help=opts.TIER_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=opts.U_HELP),
    input_tokens: float | None = typer.Option(
        None, "--input-tokens", help=f"Input tokens/request (default {DEFAULT_INPUT_TOKENS:g})."
    ),
    output_tokens: float | None = typer.Option(
        None, "--output-tokens", help=f"Output tokens/request (default {DEFAULT_OUTPUT_TOKENS:g})."
    ),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    cache_write_share: float | None = typer.Option(
        None, "--cache-write-share", help="Share of input tokens written to the cache (billed at the provider's "
        "cache-write price). Default: the uncached input when --cached-share > 0, else none."),
    target_margin: float = typer.Option(0.0, "--target-margin", help="Gross margin the break-evens aim at."),
    price_decline: list[float] = typer.Option([0.5, 0.8], "--price-decline", help="Yearly list-price cut(s)."),
    years: int = typer.Option(1, "--years", help="Years of price decline to show."),
    hw_decline: float = typer.Option(0.0, "--hw-decline", help="Yearly $/GPU-hour decline."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Tornado rows: margin vs each input +-20%."),
    prefill_fraction: float = typer.Option(0.0, "--prefill-fraction", help="GPU-time share of prefill (cache)."),
    curve: bool = typer.Option(False, "--curve", help="Margin at utilization 0.05..1."),
    slo: str | None = typer.Option(None, "--slo", help="Results mode: " + opts.SLO_HELP),
    subscription_fee: float | None = typer.Option(None, "--subscription-fee", help="Monthly plan fee."),
    fee_currency: str = typer.Option("USD", "--fee-currency", help="USD | CNY."),
    requests_per_month: float | None = typer.Option(None, "--requests-per-month", help="(Median) requests/month."),
    requests_sigma: float = typer.Option(0.0, "--requests-sigma", help="Lognormal spread of requests/month."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    explain: bool = typer.Option(False, "--explain", help="Print the arithmetic behind each headline figure."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Gross margin at a price-book entry: of measured points (--results) or a given throughput.

    Every figure is at the stated utilization U (default in bench.econ.cost); --explain prints the
    arithmetic (revenue, GPU-seconds, cost per request, margin, break-evens) to redo by hand.
    """
    from bench.config.hardware import convert_to_usd, load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import fleet
    from bench.econ import queries as q
    from bench.econ.margin import Offer

    opts.require_finite(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
                        tok_s_per_gpu=tok_s_per_gpu, usd_per_gpu_hour=usd_per_gpu_hour, utilization=utilization,
                        input_tokens=input_tokens, output_tokens=output_tokens, cached_share=cached_share,
                        cache_write_share=cache_write_share, target_margin=target_margin, price_decline=price_decline,
                        hw_decline=hw_decline, prefill_fraction=prefill_fraction, subscription_fee=subscription_fee,
                        requests_per_month=requests_per_month, requests_sigma=requests_sigma, usd_per_cny=usd_per_cny)
    if requests_sigma < 0:
        raise UserInputError(f"--requests-sigma: must be >= 0 (0 = every subscriber sends the median; "
                             f"got {requests_sigma:g})")
    the_slo = opts.slo_option(slo)
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    entry = load_price_book().get(price)
    tier, tier_note = q.pick_tier(catalog, gpu, tier) if usd_per_gpu_hour is None else (tier, None)
    tok_s_per_gpu, tok_note = q.output_tok_s(
        q.traffic_mix(input_tokens, output_tokens, cached_share), output=output_tok_s_per_gpu,
        total=total_tok_s_per_gpu, deprecated=tok_s_per_gpu)
    if results is not None:
        if tok_s_per_gpu is not None:
            raise UserInputError("give either --output-tok-s-per-gpu / --total-tok-s-per-gpu or --results, not both")
        if explain:
            raise UserInputError("--explain: works on the what-if form (one throughput); allowed: without --results")
        rate = None if usd_per_gpu_hour is None and gpu is None else q.gpu_rate(catalog, gpu, tier,
                                                                                usd_per_gpu_hour, fx)[0]
        m = q.margin_of_points(opts.load_points(results), entry, utilization, the_slo, input_tokens=input_tokens,
                               output_tokens=output_tokens, cached_share=cached_share, usd_per_gpu_hour=rate,
                               usd_per_cny=fx)
        if json_out:
            print_json({"price": price, "utilization": utilization, "slo": str(the_slo), "points": m.rows,
                        "best_under_slo": m.best})
            opts.print_notes(tier_note)
            return
        slo_cols = [t.column for t in the_slo.terms] or ["ttft_ms_p90", "tpot_ms_p90"]
        cols = ["point_id", "model", "quantization", "gpu_count", "concurrency", "request_rate",
                "enable_prefix_caching", "cached_share", "output_tok_s_per_gpu", *dict.fromkeys(slo_cols),
                "cost_usd_per_m_output_tokens", "revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour", "gross_margin",
                "meets_slo"]
        print_table(f"Margin per point at {price}, at U = {utilization:g}", opts.pct(m.rows), cols)
        say(cache_note(m.rows, utilization))
        slo_text = the_slo.describe() if the_slo else "no SLO"
        say(f"best under SLO ({slo_text}): {m.best['point_id']} gross margin {m.best['gross_margin']:.1%} "
            f"at U = {utilization:g}" if m.best else f"no point meets the SLO ({slo_text})")
        opts.print_notes(tier_note)
        return
    if slo is not None:
        raise UserInputError("--slo needs --results (a what-if throughput has no latency to check)")
    if tok_s_per_gpu is None:
        raise UserInputError("give --output-tok-s-per-gpu or --total-tok-s-per-gpu (what-if) or --results "
                             "(measured points)")
    rate, rate_src = q.gpu_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    mix = q.traffic_mix(input_tokens, output_tokens, cached_share, cache_write_share)
    tok_s_per_gpu, cache_source = q.what_if_cache_throughput(tok_s_per_gpu, mix.cached_share, prefill_fraction)
    inputs = {
        "price": price, "currency": entry.currency, "rate": rate_src, "usd_per_gpu_hour": rate,
        "output_tok_s_per_gpu": tok_s_per_gpu, "utilization": utilization, "input_tokens": mix.input_tokens,
        "cached_share": mix.cached_share, "cached_share_source": cache_source,
        "cache_written_input_tokens": mix.written_input_tokens, "output_tokens": mix.output_tokens,
    }
    if total_tok_s_per_gpu is not None:
        inputs["total_tok_s_per_gpu"] = total_tok_s_per_gpu
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
            Offer(mix, entry, tok_s_per_gpu, rate, utilization, fx), target_margin=target_margin, years=years,
            price_declines=price_decline, hw_decline=hw_decline, sensitivity=sensitivity,
            prefill_fraction=prefill_fraction, curve=curve, subscription=subscription,
        ),
    }
    if explain:
        out["explain"] = q.explain_margin(mix, entry, price, tok_s_per_gpu, rate, rate_src, utilization,
                                          target_margin, fx)
    if json_out:
        print_json(out)
        opts.print_notes(tier_note, tok_note)
        return
    at_u = f"at U = {utilization:g}"
    print_table(f"Margin at {price}, {at_u}", opts.pct([{**inputs, **out["margin"]}]), [
        "price", "rate", "usd_per_gpu_hour", "output_tok_s_per_gpu", "utilization", "input_tokens", "cached_share",
        "output_tokens", "revenue_usd_per_request", "cost_usd_per_request", "gross_margin",
        "margin_usd_per_m_tokens", "cost_usd_per_m_output_tokens", "revenue_usd_per_gpu_hour",
        "cost_usd_per_gpu_hour"])
    if mix.cached_share > 0:
        say(f"cache: {cache_source}")
    be = dict(out["break_even"])
    be["break_even_utilization"] = be.pop("utilization")  # the U that reaches the target, not the U in use
    print_table(f"Break-even for gross margin {target_margin:.0%} (price and throughput {at_u})", opts.pct([be]))
    for d, rows in out["price_decline"].items():
        print_table(f"Price falls {float(d):.0%} a year (hardware {hw_decline:.0%} a year), {at_u}", opts.pct(rows))
    if sensitivity:
        print_table(f"Sensitivity of gross margin (tornado), base {at_u}", opts.pct(out["sensitivity"]))
    if curve:
        print_table("Gross margin vs utilization U", opts.pct(out["curve"]))
    if "subscription" in out:
        print_table(f"Subscriber, {at_u}", opts.pct([out["subscription"]["one_subscriber"]]))
        if "population" in out["subscription"]:
            print_table(f"Subscribers (lognormal requests, sigma {requests_sigma:g}), {at_u}",
                        opts.pct([out["subscription"]["population"]]))
    if explain:
        say(f"How the headline figures are computed (USD, {at_u}; redo by hand):")
        for line in out["explain"]:
            say("  " + line)
    opts.print_notes(tier_note, tok_note)
