"""MaaS unit economics: what a token sells for against what it costs to make.

Everything here compares the revenue and the cost of the *same requests*, so no input/output cost
split is needed (see bench.econ.cost.split_cost for why reports still show one).

Model (stated once, here):
- A traffic mix is a request of `input_tokens` prompt tokens (a `cached_share` of them are prefix
  cache hits) and `output_tokens` generated tokens.
- Revenue per request = uncached input x p_in + cached input x p_cached + output x p_out, prices per
  million tokens from the price book (CNY converted with the explicit exchange rate), at the tier the
  request's input AND output length fall in. Where a provider charges for writing the cache
  (MiniMax: cache_write_per_m), the written input tokens are billed at p_write instead of p_in.
  Assumption on what is written (`TrafficMix.cache_write_share`, default below): when a workload
  uses the cache at all (cached_share > 0), every uncached input token is written, because in a
  multi-turn conversation this turn's new tokens are the prefix the next turn hits; with no cache
  hits, nothing is written. Override with cache_write_share in [0, 1 - cached_share].
- Throughput is output tok/s per GPU measured (or assumed) *on that mix*; one request then uses
  output_tokens / tok_s GPU-seconds, prefill included, and costs that times $/GPU-hour / 3600 / U.
  Utilization U in (0, 1]: benchmarks measure a full server, a fleet is busy only U of the time.
- Gross margin = 1 - cost / revenue. Margin per M tokens counts input + output tokens.
- A cached share changes revenue at once; it changes cost only through the measured throughput
  (measure with prefix caching on), or, in `margin_sensitivity`, through `prefill_fraction`.

Public API: TrafficMix, UsdPrices, usd_prices, revenue_usd_per_request, api_margin -> ApiMargin;
break_even_utilization, break_even_price -> BreakEvenPrice, break_even_tok_s_per_gpu;
margin_vs_utilization (rows for the margin-vs-utilization plot); price_decline_scenarios;
margin_sensitivity (tornado rows); margin_per_point, best_point. Subscriptions, private and shared
deployments, fleet sizing and the what-if bundle build on these in bench.econ.fleet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.config.hardware import convert_to_usd
from bench.config.prices import PriceEntry
from bench.config.slo import SLO_METRICS, Slo
from bench.econ.cache import GIVEN_REVENUE_ONLY, MEASURED, NONE, measured_cached_share, revenue_usd_per_gpu_hour
from bench.econ.cost import (
    SECONDS_PER_HOUR,
    TOKENS_PER_M,
    require_fraction,
    require_non_negative,
    require_positive,
    require_utilization,
    usd_per_m_tokens,
)
from bench.errors import UserInputError

# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficMix:
    """Tokens per request: `input_tokens` prompt (of which `cached_share` hit the prefix cache)."""

    input_tokens: float
    output_tokens: float
    cached_share: float = 0.0
    cache_write_share: float | None = None  # share of input tokens written to the cache; None = default rule

    def __post_init__(self) -> None:
        require_non_negative("input_tokens", self.input_tokens)
        require_positive("output_tokens", self.output_tokens)
        require_fraction("cached_share", self.cached_share)
        if self.cache_write_share is not None:
            w = require_fraction("cache_write_share", self.cache_write_share)
            if w > 1 - self.cached_share + 1e-12:
                raise UserInputError(f"cache_write_share must be in [0, 1 - cached_share] = "
                                     f"[0, {1 - self.cached_share:g}] (got {w:g})")

    @property
    def written_input_tokens(self) -> float:
        """Input tokens written to the cache (see the module docstring for the default rule)."""
        if self.cache_write_share is not None:
            return self.input_tokens * self.cache_write_share
        return self.uncached_input_tokens if self.cached_share > 0 else 0.0

    @property
    def cached_input_tokens(self) -> float:
        return self.input_tokens * self.cached_share

    @property
    def uncached_input_tokens(self) -> float:
        return self.input_tokens - self.cached_input_tokens

    @property
    def total_tokens(self) -> float:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsdPrices:
    """USD per million tokens for one request size. No cached price = cache hits billed as input."""

    input_usd_per_m: float
    output_usd_per_m: float
    cached_input_usd_per_m: float | None = None
    label: str = ""
    cache_write_usd_per_m: float | None = None  # None = writing the cache costs the input price

    def __post_init__(self) -> None:
        require_non_negative("input price (usd per M)", self.input_usd_per_m)
        require_non_negative("output price (usd per M)", self.output_usd_per_m)
        if self.cached_input_usd_per_m is not None:
            require_non_negative("cached input price (usd per M)", self.cached_input_usd_per_m)
        if self.cache_write_usd_per_m is not None:
            require_non_negative("cache write price (usd per M)", self.cache_write_usd_per_m)

    @property
    def cache_write_or_input_usd_per_m(self) -> float:
        return self.input_usd_per_m if self.cache_write_usd_per_m is None else self.cache_write_usd_per_m

    @property
    def cached_or_input_usd_per_m(self) -> float:
        return self.input_usd_per_m if self.cached_input_usd_per_m is None else self.cached_input_usd_per_m

    def scaled(self, factor: float) -> UsdPrices:
        """Every price times `factor` (a list-price cut of 50% is factor 0.5)."""
        cached = None if self.cached_input_usd_per_m is None else self.cached_input_usd_per_m * factor
        write = None if self.cache_write_usd_per_m is None else self.cache_write_usd_per_m * factor
        return replace(self, input_usd_per_m=self.input_usd_per_m * factor,
                       output_usd_per_m=self.output_usd_per_m * factor, cached_input_usd_per_m=cached,
                       cache_write_usd_per_m=write)


PriceLike = PriceEntry | UsdPrices


def usd_prices(price: PriceLike, mix: TrafficMix | float, usd_per_cny: float | None = None) -> UsdPrices:
    """The USD prices that apply to a request of `mix` (picks the tier by input AND output length;
    a bare number is an input length with output 0, for entries tiered by input only)."""
    if isinstance(price, UsdPrices):
        return price
    if isinstance(mix, TrafficMix):
        tier = price.prices_for(mix.input_tokens, mix.output_tokens)
    else:
        tier = price.prices_for(mix)

    def conv(v: float | None, what: str) -> float | None:
        return None if v is None else convert_to_usd(v, price.currency, usd_per_cny, what=f"price {what}")

    return UsdPrices(
        input_usd_per_m=conv(tier.input_per_m, "input_per_m"),  # type: ignore[arg-type]
        output_usd_per_m=conv(tier.output_per_m, "output_per_m"),  # type: ignore[arg-type]
        cached_input_usd_per_m=conv(tier.cached_input_per_m, "cached_input_per_m"),
        cache_write_usd_per_m=conv(tier.cache_write_per_m, "cache_write_per_m"),
    )


def revenue_usd_per_request(mix: TrafficMix, prices: UsdPrices) -> float:
    """(uncached - written) input x p_in + written input x p_write + cached input x p_cached
    + output x p_out (prices per M tokens; p_write = p_in where the provider charges no write)."""
    written = mix.written_input_tokens
    return (
        (mix.uncached_input_tokens - written) * prices.input_usd_per_m
        + written * prices.cache_write_or_input_usd_per_m
        + mix.cached_input_tokens * prices.cached_or_input_usd_per_m
        + mix.output_tokens * prices.output_usd_per_m
    ) / TOKENS_PER_M


def cost_usd_per_request(mix: TrafficMix, output_tok_s_per_gpu: float, usd_per_gpu_hour: float,
                         utilization: float) -> float:
    """GPU cost of one request of `mix` at `utilization` (GPU-seconds for its output tokens, at the
    hourly price); shared with bench.econ.fleet so both count cost the same way."""
    gpu_s = mix.output_tokens / output_tok_s_per_gpu
    return gpu_s * usd_per_gpu_hour / SECONDS_PER_HOUR / utilization


def check_common(output_tok_s_per_gpu: float | None, usd_per_gpu_hour: float, utilization: float) -> None:
    """Validate the inputs every margin and fleet formula takes (one error line per bad field)."""
    if output_tok_s_per_gpu is not None:
        require_positive("tok_s_per_gpu", output_tok_s_per_gpu)
    require_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    require_utilization(utilization)


def require_revenue(revenue: float) -> float:
    """`revenue` (USD per request) when positive; a margin over zero revenue is undefined."""
    if revenue <= 0:
        raise UserInputError("price: revenue per request is 0 at this price and mix; prices must be > 0")
    return revenue


def _target(target_margin: float) -> float:
    return require_fraction("target_margin", target_margin, upper_open=True)


# --- API margin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiMargin:
    """Revenue, cost and gross margin of one request of a traffic mix, and the same per M tokens."""

    revenue_usd_per_request: float
    cost_usd_per_request: float
    gross_margin: float  # fraction: 1 - cost / revenue (negative = selling at a loss)
    margin_usd_per_request: float
    margin_usd_per_m_tokens: float  # per million input + output tokens
    revenue_usd_per_m_tokens: float
    cost_usd_per_m_tokens: float
    cost_usd_per_m_output_tokens: float  # all cost on output (the InferenceX convention)
    gpu_s_per_request: float
    utilization: float
    # what one GPU-hour sells for at U (price book x mix, cached tokens at the cached price) and what it
    # costs (the hourly rate: paid whether busy or idle): margin = 1 - cost / revenue per GPU-hour too
    revenue_usd_per_gpu_hour: float = 0.0
    cost_usd_per_gpu_hour: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def api_margin(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    utilization: float = 1.0,
    *,
    usd_per_cny: float | None = None,
) -> ApiMargin:
    """Gross margin of per-token API sales of `mix` at `price`, for a GPU doing `output_tok_s_per_gpu`."""
    check_common(output_tok_s_per_gpu, usd_per_gpu_hour, utilization)
    prices = usd_prices(price, mix, usd_per_cny)
    revenue = require_revenue(revenue_usd_per_request(mix, prices))
    cost = cost_usd_per_request(mix, output_tok_s_per_gpu, usd_per_gpu_hour, utilization)
    per_m = TOKENS_PER_M / mix.total_tokens
    return ApiMargin(
        revenue_usd_per_request=revenue,
        cost_usd_per_request=cost,
        gross_margin=1.0 - cost / revenue,
        margin_usd_per_request=revenue - cost,
        margin_usd_per_m_tokens=(revenue - cost) * per_m,
        revenue_usd_per_m_tokens=revenue * per_m,
        cost_usd_per_m_tokens=cost * per_m,
        cost_usd_per_m_output_tokens=usd_per_m_tokens(output_tok_s_per_gpu, usd_per_gpu_hour, utilization),
        gpu_s_per_request=mix.output_tokens / output_tok_s_per_gpu,
        utilization=utilization,
        revenue_usd_per_gpu_hour=revenue_usd_per_gpu_hour(revenue, mix.output_tokens, output_tok_s_per_gpu,
                                                          utilization),
        cost_usd_per_gpu_hour=usd_per_gpu_hour,
    )


# --- break-even -------------------------------------------------------------------------------


def break_even_utilization(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    target_margin: float = 0.0,
    *,
    usd_per_cny: float | None = None,
) -> float:
    """Utilization at which gross margin equals `target_margin`: U = cost(U=1) / (revenue x (1 - m)).

    Below it the fleet loses (or misses the target). A value above 1 means even a fully busy fleet
    cannot reach the target at this price and throughput.
    """
    check_common(output_tok_s_per_gpu, usd_per_gpu_hour, 1.0)
    m = _target(target_margin)
    revenue = require_revenue(revenue_usd_per_request(mix, usd_prices(price, mix, usd_per_cny)))
    cost_full = cost_usd_per_request(mix, output_tok_s_per_gpu, usd_per_gpu_hour, 1.0)
    return cost_full / (revenue * (1 - m))


@dataclass(frozen=True)
class BreakEvenPrice:
    """The list price (all token prices scaled by `scale`) at which margin equals the target."""

    scale: float  # 0.4 = the target is met at 40% of today's list prices
    input_usd_per_m: float
    cached_input_usd_per_m: float
    output_usd_per_m: float
    blended_usd_per_m_tokens: float  # revenue per M input + output tokens of the mix at that price
    target_margin: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def break_even_price(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    utilization: float = 1.0,
    target_margin: float = 0.0,
    *,
    usd_per_cny: float | None = None,
) -> BreakEvenPrice:
    """Scale of today's price list at which margin equals `target_margin`: k = cost / (revenue x (1 - m)).

    Prices move together (the input:cached:output ratios of the entry are kept), which is how
    providers cut list prices; below k x list the mix is sold at a loss (or under the target).
    """
    check_common(output_tok_s_per_gpu, usd_per_gpu_hour, utilization)
    m = _target(target_margin)
    prices = usd_prices(price, mix, usd_per_cny)
    revenue = require_revenue(revenue_usd_per_request(mix, prices))
    cost = cost_usd_per_request(mix, output_tok_s_per_gpu, usd_per_gpu_hour, utilization)
    k = cost / (revenue * (1 - m))
    p = prices.scaled(k)
    return BreakEvenPrice(
        scale=k,
        input_usd_per_m=p.input_usd_per_m,
        cached_input_usd_per_m=p.cached_or_input_usd_per_m,
        output_usd_per_m=p.output_usd_per_m,
        blended_usd_per_m_tokens=revenue * k / mix.total_tokens * TOKENS_PER_M,
        target_margin=m,
    )


def break_even_tok_s_per_gpu(
    mix: TrafficMix,
    price: PriceLike,
    usd_per_gpu_hour: float,
    utilization: float = 1.0,
    target_margin: float = 0.0,
    *,
    usd_per_cny: float | None = None,
) -> float:
    """Output tok/s per GPU needed for `target_margin`: out x $/h / (3600 x U x revenue x (1 - m))."""
    check_common(None, usd_per_gpu_hour, utilization)
    m = _target(target_margin)
    revenue = require_revenue(revenue_usd_per_request(mix, usd_prices(price, mix, usd_per_cny)))
    return mix.output_tokens * usd_per_gpu_hour / (SECONDS_PER_HOUR * utilization * revenue * (1 - m))


def margin_vs_utilization(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    utilizations: Sequence[float] | None = None,
    *,
    usd_per_cny: float | None = None,
) -> list[dict[str, float]]:
    """Rows {utilization, gross_margin, cost_usd_per_m_output_tokens, ...} for a margin-vs-U plot.

    Default grid 0.05, 0.10, ..., 1.00. Mark the break-even with `break_even_utilization(...)`.
    """
    grid = list(utilizations) if utilizations is not None else [round(0.05 * i, 2) for i in range(1, 21)]
    rows = []
    for u in grid:
        r = api_margin(mix, price, output_tok_s_per_gpu, usd_per_gpu_hour, u, usd_per_cny=usd_per_cny)
        rows.append({
            "utilization": u,
            "gross_margin": r.gross_margin,
            "cost_usd_per_m_output_tokens": r.cost_usd_per_m_output_tokens,
            "cost_usd_per_request": r.cost_usd_per_request,
            "revenue_usd_per_request": r.revenue_usd_per_request,
        })
    return rows


# --- scenarios and sensitivity ----------------------------------------------------------------


def price_decline_scenarios(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    utilization: float = 1.0,
    *,
    years: int = 3,
    price_decline_per_year: float = 0.5,
    hw_cost_decline_per_year: float = 0.0,
    throughput_gain_per_year: float = 0.0,
    usd_per_cny: float | None = None,
) -> list[dict[str, float]]:
    """Margin year by year when list prices fall by d a year, $/GPU-hour by h and tok/s grows by g.

    Year y: price x (1-d)^y, $/GPU-hour x (1-h)^y, throughput x (1+g)^y. Year 0 is today.
    """
    if not isinstance(years, int) or years < 0:
        raise UserInputError(f"years must be a whole number >= 0 (got {years})")
    d = require_fraction("price_decline_per_year", price_decline_per_year, upper_open=True)
    h = require_fraction("hw_cost_decline_per_year", hw_cost_decline_per_year, upper_open=True)
    g = require_non_negative("throughput_gain_per_year", throughput_gain_per_year)
    base = usd_prices(price, mix, usd_per_cny)
    rows = []
    for y in range(years + 1):
        p = base.scaled((1 - d) ** y)
        rate = usd_per_gpu_hour * (1 - h) ** y
        tok = output_tok_s_per_gpu * (1 + g) ** y
        r = api_margin(mix, p, tok, rate, utilization)
        rows.append({
            "year": y,
            "price_scale": (1 - d) ** y,
            "output_usd_per_m": p.output_usd_per_m,
            "usd_per_gpu_hour": rate,
            "output_tok_s_per_gpu": tok,
            "gross_margin": r.gross_margin,
            "margin_usd_per_m_tokens": r.margin_usd_per_m_tokens,
            "break_even_utilization": break_even_utilization(mix, p, tok, rate),
        })
    return rows


def margin_sensitivity(
    mix: TrafficMix,
    price: PriceLike,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    utilization: float = 1.0,
    *,
    swing: float = 0.2,
    cache_swing: float = 0.2,
    prefill_fraction: float = 0.0,
    usd_per_cny: float | None = None,
) -> list[dict[str, Any]]:
    """Tornado-chart rows: gross margin when one input moves down/up, the others at base.

    Utilization, price, throughput and $/GPU-hour move by x(1 -/+ swing) (utilization capped at 1);
    the cache-hit share moves by -/+ cache_swing (clipped to [0, 1]). Caching always changes revenue;
    it changes cost only if `prefill_fraction` (share of a request's GPU time spent in prefill when
    nothing is cached) is given: GPU time scales as (1 - f x c) / (1 - f x c0).
    Rows are sorted by the width of the swing in margin, widest first.
    """
    s = require_fraction("swing", swing, upper_open=True)
    cs = require_fraction("cache_swing", cache_swing)
    f = require_fraction("prefill_fraction", prefill_fraction, upper_open=True)
    prices = usd_prices(price, mix, usd_per_cny)
    base = api_margin(mix, prices, output_tok_s_per_gpu, usd_per_gpu_hour, utilization).gross_margin

    def m(mx: TrafficMix = mix, p: UsdPrices = prices, tok: float = output_tok_s_per_gpu,
          rate: float = usd_per_gpu_hour, u: float = utilization) -> float:
        return api_margin(mx, p, tok, rate, u).gross_margin

    c0 = mix.cached_share
    c_lo, c_hi = max(0.0, c0 - cs), min(1.0, c0 + cs)

    def with_cache(c: float) -> float:
        tok = output_tok_s_per_gpu * (1 - f * c0) / (1 - f * c)
        return m(mx=replace(mix, cached_share=c), tok=tok)

    cases = [
        ("utilization", utilization * (1 - s), min(1.0, utilization * (1 + s)),
         lambda v: m(u=v)),
        ("price", 1 - s, 1 + s, lambda v: m(p=prices.scaled(v))),
        ("throughput", output_tok_s_per_gpu * (1 - s), output_tok_s_per_gpu * (1 + s), lambda v: m(tok=v)),
        ("usd_per_gpu_hour", usd_per_gpu_hour * (1 - s), usd_per_gpu_hour * (1 + s), lambda v: m(rate=v)),
        ("cached_share", c_lo, c_hi, with_cache),
    ]
    rows = []
    for name, lo, hi, fn in cases:
        m_lo, m_hi = fn(lo), fn(hi)
        rows.append({"factor": name, "low_value": lo, "high_value": hi, "margin_at_low": m_lo,
                     "margin_at_high": m_hi, "base_margin": base, "span": abs(m_hi - m_lo)})
    rows.sort(key=lambda r: r["span"], reverse=True)
    return rows


# --- measured points --------------------------------------------------------------------------

SLO_COLUMN_PREFIXES = tuple(f"{m}_" for m in SLO_METRICS)

def margin_per_point(
    points: Any,
    price: PriceLike,
    utilization: float,
    *,
    mix: TrafficMix | None = None,
    cached_share: float = 0.0,
    usd_per_gpu_hour: float | None = None,
    usd_per_cny: float | None = None,
) -> list[dict[str, Any]]:
    """Margin of every successful point of a results table (a DataFrame from bench.sweep.store.load_results).

    Each point is priced at its own measured mix (input_tokens / completed, output_tokens / completed:
    those columns are totals over the point) unless `mix` is given; the GPU rate is the point's
    `usd_per_gpu_hour` unless `usd_per_gpu_hour` is given. Failed points are skipped.
    The cache counts on both sides at the point's *measured* hit rate when it has one
    (`cached_input_frac`: revenue bills those tokens at the cached price, and the cost uses the
    throughput measured at that hit rate); only a point without a measurement uses `cached_share`
    (revenue only: its throughput is what was measured). `cached_share_source` says which.
    """
    require_utilization(utilization)
    rows: list[dict[str, Any]] = []
    for rec in points.to_dict("records"):
        if rec.get("status", "ok") != "ok":
            continue
        tok = rec.get("output_tok_s_per_gpu")
        rate = usd_per_gpu_hour if usd_per_gpu_hour is not None else rec.get("usd_per_gpu_hour")
        if not _num_ok(tok) or not _num_ok(rate):
            continue
        if mix is not None:
            pmix = mix
        else:
            done = rec.get("completed") or 0
            if not done or not _num_ok(rec.get("output_tokens")):
                continue
            measured = measured_cached_share(rec)
            share = measured if measured is not None else cached_share
            pmix = TrafficMix(rec["input_tokens"] / done, rec["output_tokens"] / done, share)
        source = (MEASURED if mix is None and measured_cached_share(rec) is not None
                  else GIVEN_REVENUE_ONLY if pmix.cached_share > 0 else NONE)
        r = api_margin(pmix, price, float(tok), float(rate), utilization, usd_per_cny=usd_per_cny)
        row = {k: rec.get(k) for k in ("point_id", "model", "quantization", "gpu_type", "gpu_count",
                                        "concurrency", "request_rate")}
        row.update({
            "input_tokens_per_request": pmix.input_tokens,
            "output_tokens_per_request": pmix.output_tokens,
            "enable_prefix_caching": rec.get("enable_prefix_caching"),
            "prefix_cache_hit_rate": rec.get("prefix_cache_hit_rate"),
            "cached_share": pmix.cached_share,
            "cached_share_source": source,
            "output_tok_s_per_gpu": float(tok),
            "usd_per_gpu_hour": float(rate),
            **{k: rec.get(k) for k in rec if k.startswith(SLO_COLUMN_PREFIXES)},  # what an Slo reads
            "cost_usd_per_m_output_tokens": r.cost_usd_per_m_output_tokens,
            "gross_margin": r.gross_margin,
            "margin_usd_per_m_tokens": r.margin_usd_per_m_tokens,
            "revenue_usd_per_gpu_hour": r.revenue_usd_per_gpu_hour,
            "cost_usd_per_gpu_hour": r.cost_usd_per_gpu_hour,
            "utilization": utilization,
        })
        rows.append(row)
    return rows


def _num_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def best_point(rows: Sequence[dict[str, Any]], slo: Slo | None = None) -> dict[str, Any] | None:
    """The point with the highest gross margin among those meeting `slo` (None if none does)."""
    ok = [r for r in rows if slo is None or slo.met_by(r)]
    return max(ok, key=lambda r: r["gross_margin"]) if ok else None
