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
from bench.econ.cost import DEFAULT_MAX_UTILIZATION_AT_PEAK, DEFAULT_PEAK_TO_AVERAGE, DEFAULT_UTILIZATION
from bench.econ.queries import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
from bench.errors import UserInputError

SLO_HELP = "SLO 'metric[_pNN]<=ms,...' (metrics ttft_ms, tpot_ms, itl_ms, e2el_ms; default p90), e.g. 'tpot_ms<=50'."
TIER_HELP = ("Cost tier from configs/hardware.yaml: owning-hyperscaler, owning-neocloud (InferenceX owning costs), "
             "rental-3yr, on-demand*, capacity-block, or tco (our owned-hardware model). Default: owning-neocloud, "
             "else the GPU's first tier (said). Old names hyperscaler/neocloud/reserved are deprecated aliases.")
U_HELP = (f"Fleet utilization in (0, 1]: share of hours the GPUs run at the given throughput; cost x 1/U. "
          f"Default {DEFAULT_UTILIZATION:g} (= {DEFAULT_MAX_UTILIZATION_AT_PEAK:g} at peak / peak-to-average "
          f"{DEFAULT_PEAK_TO_AVERAGE:g}, bench.econ.cost); 1 = best case.")
OUT_TOK_HELP = "Output tokens/s per GPU (generated tokens only)."
TOTAL_TOK_HELP = "Total (input + output) tokens/s per GPU, as InferenceX publishes; converted through the mix."
OLD_TOK_HELP = "Deprecated: read as --output-tok-s-per-gpu."
# table cells holding a fraction that a finance reader reads as a percentage
PERCENT_KEYS = ("gross_margin", "margin_at_low", "margin_at_high", "base_margin", "target_margin",
                "share_served_at_loss", "avg_utilization", "break_even_utilization")


def _finite(**flags: Any) -> None:
    """Every numeric flag must be a finite number: inf/nan is one error line naming the flag (exit 2)."""
    import math

    for name, v in flags.items():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, float) and not math.isfinite(x):
                raise UserInputError(f"--{name.replace('_', '-')}: must be a finite number (got {x})")


def _pct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a table: margin-like fractions as percentages ("43.3%"); JSON keeps the fractions."""
    return [{k: (f"{v:.1%}" if k in PERCENT_KEYS and isinstance(v, float) else v) for k, v in r.items()}
            for r in rows]


def _notes(*extra: str | None) -> None:
    """Print deprecation and defaulting notes on stderr (stdout stays clean for --json)."""
    from bench.config.hardware import PENDING_NOTES

    for n in [*PENDING_NOTES, *extra]:
        if n:
            say(n, err=True, prefix="note: ")
    PENDING_NOTES.clear()


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
    except UserInputError as e:
        raise UserInputError(e.args[0] if str(e).startswith("--results") else f"--results: {e}") from None


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


def cost(
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml, e.g. h100."),
    tier: str | None = typer.Option(None, "--tier", help=TIER_HELP.replace("Default: owning-neocloud, else the "
                                    "GPU's first tier (said).", "Default: every tier of the GPU.")),
    output_tok_s_per_gpu: float | None = typer.Option(None, "--output-tok-s-per-gpu",
                                                      help=OUT_TOK_HELP + " Gives $/M output tokens."),
    total_tok_s_per_gpu: float | None = typer.Option(None, "--total-tok-s-per-gpu",
                                                     help=TOTAL_TOK_HELP.split(";")[0] + "; gives $/M total tokens."),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=OLD_TOK_HELP, hidden=True),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=U_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the tier rate."),
    joules_per_token: float | None = typer.Option(None, "--joules-per-token", help="Adds energy $/M tokens."),
    usd_per_kwh: float = typer.Option(0.08, "--usd-per-kwh", help="Electricity price for --joules-per-token."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """$/M tokens for a GPU at a cost tier or owned TCO, at a given throughput and utilization.

    The tokens priced are the ones the throughput counts: --output-tok-s-per-gpu gives $/M output
    tokens, --total-tok-s-per-gpu $/M input + output tokens (no mix here to convert one into the other).
    """
    from bench.config.hardware import load_hardware
    from bench.econ import queries as q

    _finite(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
            tok_s_per_gpu=tok_s_per_gpu, utilization=utilization, usd_per_gpu_hour=usd_per_gpu_hour,
            joules_per_token=joules_per_token, usd_per_kwh=usd_per_kwh, usd_per_cny=usd_per_cny)
    given = [v for v in (output_tok_s_per_gpu, total_tok_s_per_gpu, tok_s_per_gpu) if v is not None]
    if len(given) != 1:
        raise UserInputError("give exactly one of --output-tok-s-per-gpu or --total-tok-s-per-gpu")
    tokens = "total" if total_tok_s_per_gpu is not None else "output"
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    rows = q.cost_rows(catalog, gpu, tier, given[0], utilization, usd_per_gpu_hour=usd_per_gpu_hour,
                       joules_per_token=joules_per_token, usd_per_kwh=usd_per_kwh, fx=fx, tokens=tokens)
    if json_out:
        print_json(rows)
    else:
        print_table(f"Cost per million {tokens} tokens at U = {utilization:g} (sources: --json)", rows,
                    [c for c in rows[0] if c != "source"])
    _notes(q.DEPRECATED_TOK_S_NOTE if tok_s_per_gpu is not None else None)


def margin(
    price: str = typer.Option(..., "--price", help="Price-book entry <model>@<provider>, e.g. glm-4.5-air@zai."),
    results: Path | None = typer.Option(None, "--results", help="Run dir: margin of every measured point."),
    output_tok_s_per_gpu: float | None = typer.Option(None, "--output-tok-s-per-gpu", help="What-if: " + OUT_TOK_HELP),
    total_tok_s_per_gpu: float | None = typer.Option(None, "--total-tok-s-per-gpu", help="What-if: " + TOTAL_TOK_HELP),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=OLD_TOK_HELP, hidden=True),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id for the $/GPU-hour (what-if mode)."),
    tier: str | None = typer.Option(None, "--tier", help=TIER_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=U_HELP),
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
    slo: str | None = typer.Option(None, "--slo", help="Results mode: " + SLO_HELP),
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

    _finite(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
            tok_s_per_gpu=tok_s_per_gpu, usd_per_gpu_hour=usd_per_gpu_hour, utilization=utilization,
            input_tokens=input_tokens, output_tokens=output_tokens, cached_share=cached_share,
            cache_write_share=cache_write_share, target_margin=target_margin, price_decline=price_decline,
            hw_decline=hw_decline, prefill_fraction=prefill_fraction, subscription_fee=subscription_fee,
            requests_per_month=requests_per_month, requests_sigma=requests_sigma, usd_per_cny=usd_per_cny)
    if requests_sigma < 0:
        raise UserInputError(f"--requests-sigma: must be >= 0 (0 = every subscriber sends the median; "
                             f"got {requests_sigma:g})")
    the_slo = _slo(slo)
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
        m = q.margin_of_points(_load_points(results), entry, utilization, the_slo, input_tokens=input_tokens,
                               output_tokens=output_tokens, cached_share=cached_share, usd_per_gpu_hour=rate,
                               usd_per_cny=fx)
        if json_out:
            print_json({"price": price, "utilization": utilization, "slo": str(the_slo), "points": m.rows,
                        "best_under_slo": m.best})
            _notes(tier_note)
            return
        slo_cols = [t.column for t in the_slo.terms] or ["ttft_ms_p90", "tpot_ms_p90"]
        cols = ["point_id", "model", "quantization", "gpu_count", "concurrency", "request_rate",
                "enable_prefix_caching", "cached_share", "output_tok_s_per_gpu", *dict.fromkeys(slo_cols),
                "cost_usd_per_m_output_tokens", "revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour", "gross_margin",
                "meets_slo"]
        print_table(f"Margin per point at {price}, at U = {utilization:g}", _pct(m.rows), cols)
        say(cache_note(m.rows, utilization))
        slo_text = the_slo.describe() if the_slo else "no SLO"
        say(f"best under SLO ({slo_text}): {m.best['point_id']} gross margin {m.best['gross_margin']:.1%} "
            f"at U = {utilization:g}" if m.best else f"no point meets the SLO ({slo_text})")
        _notes(tier_note)
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
            mix, entry, tok_s_per_gpu, rate, utilization, target_margin=target_margin, years=years,
            price_declines=price_decline, hw_decline=hw_decline, sensitivity=sensitivity,
            prefill_fraction=prefill_fraction, curve=curve, subscription=subscription, usd_per_cny=fx,
        ),
    }
    if explain:
        out["explain"] = q.explain_margin(mix, entry, price, tok_s_per_gpu, rate, rate_src, utilization,
                                          target_margin, fx)
    if json_out:
        print_json(out)
        _notes(tier_note, tok_note)
        return
    at_u = f"at U = {utilization:g}"
    print_table(f"Margin at {price}, {at_u}", _pct([{**inputs, **out["margin"]}]), [
        "price", "rate", "usd_per_gpu_hour", "output_tok_s_per_gpu", "utilization", "input_tokens", "cached_share",
        "output_tokens", "revenue_usd_per_request", "cost_usd_per_request", "gross_margin",
        "margin_usd_per_m_tokens", "cost_usd_per_m_output_tokens", "revenue_usd_per_gpu_hour",
        "cost_usd_per_gpu_hour"])
    if mix.cached_share > 0:
        say(f"cache: {cache_source}")
    be = dict(out["break_even"])
    be["break_even_utilization"] = be.pop("utilization")  # the U that reaches the target, not the U in use
    print_table(f"Break-even for gross margin {target_margin:.0%} (price and throughput {at_u})", _pct([be]))
    for d, rows in out["price_decline"].items():
        print_table(f"Price falls {float(d):.0%} a year (hardware {hw_decline:.0%} a year), {at_u}", _pct(rows))
    if sensitivity:
        print_table(f"Sensitivity of gross margin (tornado), base {at_u}", _pct(out["sensitivity"]))
    if curve:
        print_table("Gross margin vs utilization U", _pct(out["curve"]))
    if "subscription" in out:
        print_table(f"Subscriber, {at_u}", _pct([out["subscription"]["one_subscriber"]]))
        if "population" in out["subscription"]:
            print_table(f"Subscribers (lognormal requests, sigma {requests_sigma:g}), {at_u}",
                        _pct([out["subscription"]["population"]]))
    if explain:
        say(f"How the headline figures are computed (USD, {at_u}; redo by hand):")
        for line in out["explain"]:
            say("  " + line)
    _notes(tier_note, tok_note)


PLAN_COLUMNS = ["model", "gpu", "gpus_per_replica", "rate", "output_tok_s_per_gpu", "throughput_source",
                "requests_per_day", "gpus_busy_avg", "replicas", "gpus", "avg_utilization", "monthly_cost_usd",
                "cost_usd_per_m_tokens", "monthly_revenue_usd", "revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour",
                "gross_margin"]


def plan(
    tokens_per_day: float | None = typer.Option(
        None, "--tokens-per-day", help="Input + output tokens per day (optional for the estimate)."
    ),
    model: str | None = typer.Option(None, "--model", help="Catalog model (filters --results)."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml."),
    count: int = typer.Option(1, "--count", help="GPUs per replica (e.g. 8 for TP8)."),
    quant: str | None = typer.Option(None, "--quant", help="Quantization (filters --results)."),
    tier: str | None = typer.Option(None, "--tier", help=TIER_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    output_tok_s_per_gpu: float | None = typer.Option(None, "--output-tok-s-per-gpu",
                                                      help="SLO-feasible " + OUT_TOK_HELP),
    total_tok_s_per_gpu: float | None = typer.Option(None, "--total-tok-s-per-gpu",
                                                     help="SLO-feasible " + TOTAL_TOK_HELP),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=OLD_TOK_HELP, hidden=True),
    results: Path | None = typer.Option(None, "--results", help="Run dir: best measured point under the SLO."),
    price: str | None = typer.Option(None, "--price", help="Price-book entry for revenue and margin."),
    input_tokens: float = typer.Option(DEFAULT_INPUT_TOKENS, "--input-tokens", "--isl",
                                       help="Input tokens per request."),
    output_tokens: float = typer.Option(DEFAULT_OUTPUT_TOKENS, "--output-tokens", "--osl",
                                        help="Output tokens per request."),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    peak_to_average: float = typer.Option(DEFAULT_PEAK_TO_AVERAGE, "--peak-to-average",
                                          help="Peak / average traffic, >= 1 (default: bench.econ.cost)."),
    max_utilization: float = typer.Option(DEFAULT_MAX_UTILIZATION_AT_PEAK, "--max-utilization",
                                          help="Utilization allowed at peak, (0, 1] (default: bench.econ.cost; "
                                          "1 = no headroom)."),
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
    spec_tokens: int = typer.Option(0, "--spec-tokens", help="Estimate: draft tokens per step K (0 = off)."),
    acceptance_length: float = typer.Option(1.0, "--acceptance-length",
                                            help="Estimate: tokens emitted per step with speculation, 1..K+1."),
    check_published: bool = typer.Option(False, "--check-published",
                                         help="Grade the planner on configs/published_runs.yaml (leave-one-out)."),
    published_file: Path | None = typer.Option(None, "--published-file", help="With --check-published: another file."),
    write_fit: bool = typer.Option(False, "--write-fit", help="With --check-published: write planner_fit.yaml."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fleet sizing: GPUs, monthly cost and margin to serve --tokens-per-day at an SLO-feasible throughput.

    Throughput: --tok-s-per-gpu (given), --results (the best measured point under --slo) or, when
    neither is given, the analytical roofline estimate for --model/--gpu/--count/--quant.
    --check-published grades that estimate against published GPU runs instead (leave-one-out).
    """
    if check_published:
        _check_published(published_file, write_fit, json_out)
        return
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import fleet
    from bench.econ import queries as q
    from bench.econ.cost import require_positive

    _finite(tokens_per_day=tokens_per_day, usd_per_gpu_hour=usd_per_gpu_hour, output_tok_s_per_gpu=output_tok_s_per_gpu,
            total_tok_s_per_gpu=total_tok_s_per_gpu, tok_s_per_gpu=tok_s_per_gpu, isl=input_tokens,
            osl=output_tokens, cached_share=cached_share, peak_to_average=peak_to_average,
            max_utilization=max_utilization, kv_bits=kv_bits, private_usd_per_year=private_usd_per_year,
            usd_per_cny=usd_per_cny)
    require_positive("--isl/--input-tokens", input_tokens)
    require_positive("--osl/--output-tokens", output_tokens)
    the_slo = _slo(slo)
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    if gpu is not None:
        catalog.gpu(gpu)
    # one tier for the estimate, the fleet and the margin (H20 has only 'tco': said, not swapped silently)
    tier, tier_note = q.pick_tier(catalog, gpu, tier) if usd_per_gpu_hour is None else (tier, None)
    given_tok, tok_note = q.output_tok_s(q.traffic_mix(input_tokens, output_tokens, cached_share),
                                         output=output_tok_s_per_gpu, total=total_tok_s_per_gpu,
                                         deprecated=tok_s_per_gpu)
    if given_tok is not None and results is not None:
        raise UserInputError("give either --output-tok-s-per-gpu / --total-tok-s-per-gpu or --results, not both")
    est_out = None
    if given_tok is not None:
        flag = "--total-tok-s-per-gpu" if total_tok_s_per_gpu is not None else "--output-tok-s-per-gpu"
        tok, source = given_tok, f"given ({flag})"
    elif results is not None:
        best = q.measured_throughput(_load_points(results), the_slo, model=model, gpu=gpu, quant=quant)
        tok, source = float(best["output_tok_s_per_gpu"]), f"measured: {results} point {best.get('point_id')}"
    else:
        est_out = _plan_estimate(
            model, gpu, count, quant, input_tokens, output_tokens, the_slo, tp, ep, kv_bits,
            concurrency, compare, tier or "tco", price, cached_share, usd_per_gpu_hour, catalog, fx,
            spec_tokens, acceptance_length,
        )
        best = est_out["best_under_slo"]
        if tokens_per_day is not None and not est_out["memory"].get("fits", True):
            mem = est_out["memory"]
            raise UserInputError(
                f"--model: {model} {quant} does not fit in {gpu} memory with {count} GPU(s) per replica "
                f"(weights {mem.get('weights_gib_per_gpu', float('nan')):.4g} GiB/GPU, usable "
                f"{mem.get('usable_gib_per_gpu', float('nan')):.4g} GiB/GPU): no fleet to size; allowed: more "
                "GPUs (--count/--tp), a smaller --quant, or a GPU with more memory")
        if tokens_per_day is None or best is None:
            print_json({"estimate": est_out}) if json_out else _print_estimate(est_out)
            if tokens_per_day is not None:
                raise UserInputError("no estimated point meets the SLO: no fleet to size; relax --slo")
            _notes(tier_note)
            return
        tok = best["output_tok_s_per_gpu"]
        source = f"estimate (roofline; best point under SLO: concurrency {best['concurrency']})"
    if tokens_per_day is None:
        raise UserInputError("--tokens-per-day is required with --output-tok-s-per-gpu / --total-tok-s-per-gpu "
                             "or --results")
    rate, rate_src = q.gpu_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    entry = load_price_book().get(price) if price is not None else None
    fp = fleet.fleet_size(
        tokens_per_day, q.traffic_mix(input_tokens, output_tokens, cached_share), tok, rate,
        peak_to_average=peak_to_average, gpus_per_replica=count, max_utilization_at_peak=max_utilization,
        price=entry, usd_per_cny=fx,
    )
    row = {"model": model, "gpu": gpu, "gpus_per_replica": count, "rate": rate_src, "usd_per_gpu_hour": rate,
           "output_tok_s_per_gpu": tok, "throughput_source": source, "price": price, **fp.to_dict()}
    from bench.econ.cache import fleet_usd_per_gpu_hour

    row.update(fleet_usd_per_gpu_hour(fp.monthly_revenue_usd, fp.gpus, rate))
    out: dict[str, Any] = {"plan": row}
    if est_out is not None:
        out["estimate"] = est_out
        if not json_out:
            _print_estimate(est_out)
    if private_usd_per_year is not None:
        out["private_deployment"] = fleet.private_deployment(fp.gpus, private_usd_per_year, rate)
    if json_out:
        print_json(out)
        _notes(tier_note, tok_note)
        return
    print_table(f"Fleet for {tokens_per_day:.3g} tokens/day: peak-to-average {peak_to_average:g}, at most "
                f"{max_utilization:g} utilization at peak -> average U = {fp.avg_utilization:.3g}; "
                "cost_usd_per_m_tokens counts input + output tokens", _pct([row]), PLAN_COLUMNS)
    if "private_deployment" in out:
        print_table("As a private deployment (paid for all 8760 h; utilization does not enter)",
                    _pct([out["private_deployment"]]))
    _notes(tier_note, tok_note)


def _plan_estimate(
    model: str | None, gpu: str | None, count: int, quant: str | None, isl: float, osl: float,
    slo: Any, tp: int | None, ep: bool, kv_bits: float | None, concurrency: list[int] | None,
    compare: bool, tier: str, price: str | None, cached_share: float, usd_per_gpu_hour: float | None,
    catalog: Any, fx: float | None, spec_tokens: int = 0, acceptance_length: float = 1.0,
) -> dict[str, Any]:
    """`plan` without --tok-s-per-gpu / --results: the analytical estimate (bench.planner.estimate.plan_estimate).

    The roofline has one value per metric and no itl_ms, so `Slo.point_limits()` refuses an itl_ms
    term (rather than dropping it) and the output carries a note that percentiles are not modelled.
    """
    from bench.config.prices import load_price_book
    from bench.config.slo import POINT_ESTIMATE_NOTE
    from bench.planner import estimate as roofline

    if model is None or gpu is None or quant is None:
        raise UserInputError("the estimate needs --model, --gpu and --quant (or give --output-tok-s-per-gpu / "
                             "--total-tok-s-per-gpu / --results)")
    est = roofline.plan_estimate(
        model, gpu, count, quant, int(isl), int(osl), slo=slo.point_limits(), tp=tp, ep=ep, kv_bits=kv_bits,
        concurrencies=tuple(concurrency) if concurrency else roofline.DEFAULT_CONCURRENCIES, tier=tier,
        price=load_price_book().get(price) if price is not None else None, cached_share=cached_share,
        usd_per_gpu_hour=usd_per_gpu_hour, usd_per_cny=fx,
        compare_gpus=roofline.COMPARE_GPUS if compare else None, catalog=catalog,
        spec_tokens=spec_tokens, acceptance_length=acceptance_length,
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
    say(e["error_band"], prefix="ERROR BAND ", prefix_style="bold")
    print_table("Memory fit per GPU (estimate)", [e["memory"]], [
        "weights_gib_per_gpu", "usable_gib_per_gpu", "kv_budget_gib_per_gpu", "kv_kib_per_token_per_gpu",
        "context_tokens", "max_concurrent_seqs", "fits"])
    for n in e["notes"]:
        say(f"note: {n}")
    cols = ["concurrency", "batch_per_replica", "tpot_ms", "ttft_ms", "interactivity_tok_s_user",
            "output_tok_s_per_gpu", "decode_bound", "meets_slo", "usd_per_m_output_tokens"]
    if any("gross_margin" in r for r in e["curve"]):
        cols += ["revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour", "gross_margin"]
    rate = f"{e['tier']} ${e['usd_per_gpu_hour']:.3g}/GPU-h" if e["usd_per_gpu_hour"] else "no rate known"
    print_table(f"Throughput-latency curve (estimate; $ at {rate}, at U = 1: each point's full-load cost; "
                "a fleet plan with --tokens-per-day applies the utilization)", _pct(e["curve"]), cols)
    best = e["best_under_slo"]
    slo = ", ".join(f"{k}<={v:g}" for k, v in e["slo"].items()) or "none"
    say(f"best under SLO ({slo}, point estimate): concurrency {best['concurrency']}, "
        f"{best['output_tok_s_per_gpu']:.4g} output tok/s/GPU, TPOT {best['tpot_ms']:.4g} ms, "
        f"TTFT {best['ttft_ms']:.4g} ms (estimate)"
        if best else (f"no estimated point meets the SLO ({slo}, point estimate)" if e["memory"].get("fits", True)
                      else "the model does not fit in GPU memory at this --count/--quant: no point to serve "
                           "(more GPUs, a smaller quantization or a larger GPU; relaxing --slo will not help)"))
    if e["cost_by_tier"]:
        print_table("$/M tokens by price tier at the best point (estimate, at U = 1)", _pct(e["cost_by_tier"]),
                    [c for c in e["cost_by_tier"][0] if c != "source"])
    if e.get("compare"):
        cols = ["gpu", "quant", "fits", "max_concurrent_seqs", "best_concurrency", "tpot_ms",
                "output_tok_s_per_gpu", "tier", "usd_per_m_output_tokens"]
        cols += ["gross_margin"] if any("gross_margin" in r for r in e["compare"]) else []
        print_table("GPU x quantization (estimate; best point under the SLO; $ at U = 1; all fields: --json)",
                    _pct(e["compare"]), cols)


CHECK_COLUMNS = ["id", "engine", "gpu", "spec", "weight", "predicted_output_tok_s", "published_output_tok_s",
                 "ratio_output_tok_s", "predicted_tpot_ms", "published_tpot_ms", "ratio_tpot_ms", "status"]


def _check_published(path: Path | None, write: bool, json_out: bool) -> None:
    """`plan --check-published`: predicted vs published, leave-one-out (bench.planner.fit)."""
    from bench.planner import fit

    res = fit.check_published(path)
    if write:
        res["written"] = str(fit.write_fit(res))
    if json_out:
        print_json(res)
        return
    print_table("Planner vs published GPU runs (each graded row predicted by a fit WITHOUT it)", res["rows"],
                CHECK_COLUMNS)
    for k, b in res["band"].items():
        say(f"{k}: median ratio {b['median_ratio']:.3g}, worst {b['worst_ratio']:.3g} "
            f"(typical x{b['typical_factor']:.3g}, worst x{b['worst_factor']:.3g}) over {b['n_points']} points")
    say(f"within 1.5x on both: {res['within_1_5x']} of {res['graded']} graded points")
    say("global parameters (fit on all weighted points): "
        + ", ".join(f"{k}={v:.4g}" for k, v in res["params"].items()))
    if write:
        say(f"wrote {res['written']}")


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
