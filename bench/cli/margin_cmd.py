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
    pue: float | None = typer.Option(None, "--pue", help=opts.PUE_HELP),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=opts.U_HELP),
    input_tokens: float | None = typer.Option(
        None, "--input-tokens", help=f"Input tokens/request (default {DEFAULT_INPUT_TOKENS:g})."
    ),
    output_tokens: float | None = typer.Option(
        None, "--output-tokens", help=f"Output tokens/request (default {DEFAULT_OUTPUT_TOKENS:g})."
    ),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    cache_write_share: float | None = typer.Option(
        None, "--cache-write-share", help="Share of input tokens billed as cache writes (at the provider's cache-write "
        "price). Default 0: MiniMax bills writes only for prompts marked with cache_control (its active caching); "
        "state the share a workload marks."),
    input_tokens_sigma: float = typer.Option(
        0.0, "--input-tokens-sigma", help="What-if: lognormal spread of input lengths around --input-tokens; each "
        "request is priced at its own tier (0 = every request the mean)."),
    output_tokens_sigma: float = typer.Option(
        0.0, "--output-tokens-sigma", help="What-if: lognormal spread of output lengths around --output-tokens "
        "(output-length tiers, e.g. bigmodel's < 200 tokens)."),
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
    arithmetic (revenue, GPU-seconds, cost per request, margin, break-evens) to redo by hand. With --results
    each measured request is priced at its own price tier. Inputs outside bench.econ.bounds exit 2.
    """
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import queries as q

    opts.require_finite(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
                        tok_s_per_gpu=tok_s_per_gpu, usd_per_gpu_hour=usd_per_gpu_hour, utilization=utilization,
                        input_tokens=input_tokens, output_tokens=output_tokens, cached_share=cached_share,
                        cache_write_share=cache_write_share, target_margin=target_margin, price_decline=price_decline,
                        hw_decline=hw_decline, prefill_fraction=prefill_fraction, subscription_fee=subscription_fee,
                        requests_per_month=requests_per_month, requests_sigma=requests_sigma, usd_per_cny=usd_per_cny,
                        input_tokens_sigma=input_tokens_sigma, output_tokens_sigma=output_tokens_sigma, pue=pue)
    query = q.MarginQuery(
        price=price, utilization=utilization, output_tok_s_per_gpu=output_tok_s_per_gpu,
        total_tok_s_per_gpu=total_tok_s_per_gpu, tok_s_per_gpu=tok_s_per_gpu, gpu=gpu, tier=tier,
        usd_per_gpu_hour=usd_per_gpu_hour, pue=pue, input_tokens=input_tokens, output_tokens=output_tokens,
        input_sigma=input_tokens_sigma, output_sigma=output_tokens_sigma, cached_share=cached_share,
        cache_write_share=cache_write_share, target_margin=target_margin, price_declines=tuple(price_decline),
        years=years, hw_decline=hw_decline, sensitivity=sensitivity, prefill_fraction=prefill_fraction, curve=curve,
        slo=opts.slo_option(slo), slo_given=slo is not None, subscription_fee=subscription_fee,
        fee_currency=fee_currency, requests_per_month=requests_per_month, requests_sigma=requests_sigma,
        usd_per_cny=usd_per_cny, explain=explain)
    points = opts.load_points(results) if results is not None else None
    ans = q.answer_margin(query, load_hardware(), load_price_book().get(price), points=points,
                          requests=opts.load_requests(results, points) if results is not None else None)
    if json_out:
        print_json(ans.out)
    elif ans.mode == "results":
        _print_results(ans.out, query)
    else:
        _print_what_if(ans.out, query)
    opts.print_notes(*ans.notes)


def _context_lines(out: dict[str, Any]) -> None:
    """The exchange rate (where CNY became USD) and the cache-write assumption, under every table."""
    fx = out.get("exchange_rate")
    if fx:
        say(f"CNY prices converted at {fx['usd_per_cny']:g} USD/CNY (as of {fx['as_of'] or 'undated'}; {fx['source']})")
    cw = out.get("cache_write") or {}
    if cw.get("share"):
        say(f"cache writes: {cw['share']:g} of input tokens billed at the cache-write price ({cw['source']})")


def _print_results(out: dict[str, Any], query: Any) -> None:
    u = query.utilization
    rows = out["points"]
    slo_cols = [t.column for t in query.slo.terms] or ["ttft_ms_p90", "tpot_ms_p90"]
    cols = ["point_id", "model", "quantization", "gpu_count", "concurrency", "request_rate",
            "enable_prefix_caching", "cached_share", "output_tok_s_per_gpu", *dict.fromkeys(slo_cols),
            "cost_usd_per_m_output_tokens", "revenue_usd_per_request", "revenue_usd_per_gpu_hour",
            "cost_usd_per_gpu_hour", "gross_margin", "break_even_utilization", "meets_slo"]
    print_table(f"Margin per point at {out['price']}, at U = {u:g} (each point at its measured cache share)",
                opts.pct(rows), cols)
    say(cache_note(rows, u))
    bases = sorted({r["revenue_basis"] for r in rows})
    if bases:
        say("revenue per request priced on: " + "; ".join(bases))
    _context_lines(out)
    best = out["best_under_slo"]
    slo_text = query.slo.describe() if query.slo else "no SLO"
    say(f"best under SLO ({slo_text}): {best['point_id']} gross margin {best['gross_margin']:.1%} "
        f"at U = {u:g}, cache share {best['cached_share']:.0%}" if best else f"no point meets the SLO ({slo_text})")
    if "explain" in out:
        say(f"How point {out['explain']['point_id']}'s figures are computed (USD, at U = {u:g}; redo by hand):")
        for line in out["explain"]["lines"]:
            say("  " + line)


def _print_what_if(out: dict[str, Any], query: Any) -> None:
    inputs = out["inputs"]
    at_u = f"at U = {query.utilization:g}, cache share {inputs['cached_share']:g}"
    print_table(f"Margin at {inputs['price']}, {at_u}", opts.pct([{**inputs, **out["margin"]}]), [
        "price", "rate", "usd_per_gpu_hour", "output_tok_s_per_gpu", "utilization", "input_tokens", "cached_share",
        "output_tokens", "revenue_usd_per_request", "cost_usd_per_request", "gross_margin",
        "margin_usd_per_m_tokens", "cost_usd_per_m_output_tokens", "revenue_usd_per_gpu_hour",
        "cost_usd_per_gpu_hour"])
    if inputs["cached_share"] > 0:
        say(f"cache: {inputs['cached_share_source']}")
    if "revenue_usd_per_request_mean_request" in out["margin"]:
        say(f"revenue per request: {inputs['revenue_basis']}: ${out['margin']['revenue_usd_per_request']:.6g} "
            f"(the mean request alone: ${out['margin']['revenue_usd_per_request_mean_request']:.6g})")
    _context_lines(out)
    tm = query.target_margin
    be = dict(out["break_even"])
    be["break_even_utilization"] = be.pop("utilization")  # the U that reaches the target, not the U in use
    print_table(f"Break-even for gross margin {tm:.0%} (price and throughput {at_u})", opts.pct([be]))
    for d, rows in out["price_decline"].items():
        print_table(f"Price falls {float(d):.0%} a year (hardware {query.hw_decline:.0%} a year), {at_u}; "
                    f"break-even U for gross margin {tm:.0%}", opts.pct(rows))
    if "sensitivity" in out:
        print_table(f"Sensitivity of gross margin (tornado), base {at_u}", opts.pct(out["sensitivity"]))
    if "curve" in out:
        print_table(f"Gross margin vs utilization U (cache share {inputs['cached_share']:g})", opts.pct(out["curve"]))
    if "subscription" in out:
        print_table(f"Subscriber, {at_u}", opts.pct([out["subscription"]["one_subscriber"]]))
        if "population" in out["subscription"]:
            print_table(f"Subscribers (lognormal requests, sigma {query.requests_sigma:g}), {at_u}",
                        opts.pct([out["subscription"]["population"]]))
    if "explain" in out:
        say(f"How the headline figures are computed (USD, {at_u}; redo by hand):")
        for line in out["explain"]:
            say("  " + line)
