"""What-if rows around one offer: margin year by year as prices fall, and which input moves it most.

Why a module of its own: these only re-ask bench.econ.margin's question (api_margin of an Offer) with
one input moved, so they hold no formula of their own; margin.py stays the per-request model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.econ.cost import require_fraction, require_non_negative
from bench.econ.margin import Offer, api_margin, break_even_utilization
from bench.errors import UserInputError


def price_decline_scenarios(
    offer: Offer,
    *,
    years: int = 3,
    price_decline_per_year: float = 0.5,
    hw_cost_decline_per_year: float = 0.0,
    throughput_gain_per_year: float = 0.0,
    target_margin: float = 0.0,
) -> list[dict[str, float]]:
    """Margin year by year when list prices fall by d a year, $/GPU-hour by h and tok/s grows by g.

    Year y: price x (1-d)^y (every tier, requests priced as the offer prices them), $/GPU-hour x (1-h)^y,
    throughput x (1+g)^y, at the offer's utilization. Year 0 is today. `break_even_utilization` is the U
    at which the year's margin reaches `target_margin` (the same meaning as the break-even table's).
    """
    if not isinstance(years, int) or years < 0:
        raise UserInputError(f"years must be a whole number >= 0 (got {years})")
    d = require_fraction("price_decline_per_year", price_decline_per_year, upper_open=True)
    h = require_fraction("hw_cost_decline_per_year", hw_cost_decline_per_year, upper_open=True)
    g = require_non_negative("throughput_gain_per_year", throughput_gain_per_year)
    rows = []
    for y in range(years + 1):
        year = offer.but(price_scale=offer.price_scale * (1 - d) ** y,
                         usd_per_gpu_hour=offer.usd_per_gpu_hour * (1 - h) ** y,
                         output_tok_s_per_gpu=offer.output_tok_s_per_gpu * (1 + g) ** y)
        r = api_margin(year)
        rows.append({
            "year": y,
            "price_scale": (1 - d) ** y,
            "output_usd_per_m": year.prices.output_usd_per_m,
            "usd_per_gpu_hour": year.usd_per_gpu_hour,
            "output_tok_s_per_gpu": year.output_tok_s_per_gpu,
            "gross_margin": r.gross_margin,
            "margin_usd_per_m_tokens": r.margin_usd_per_m_tokens,
            "target_margin": target_margin,
            "break_even_utilization": break_even_utilization(year, target_margin),
        })
    return rows


def margin_sensitivity(
    offer: Offer,
    *,
    swing: float = 0.2,
    cache_swing: float = 0.2,
    prefill_fraction: float = 0.0,
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
    at = offer
    base = api_margin(at).gross_margin

    def m(**changes: Any) -> float:
        return api_margin(at.but(**changes)).gross_margin

    mix, u, tok, rate = offer.mix, offer.utilization, offer.output_tok_s_per_gpu, offer.usd_per_gpu_hour
    scale = offer.price_scale
    c0 = mix.cached_share
    c_lo, c_hi = max(0.0, c0 - cs), min(1.0, c0 + cs)

    def with_cache(c: float) -> float:
        reqs = offer.requests
        moved = None if reqs is None else replace(reqs, cached=reqs.input * c)
        return m(mix=replace(mix, cached_share=c, cache_write_share=min(mix.write_share, 1 - c)), requests=moved,
                 output_tok_s_per_gpu=tok * (1 - f * c0) / (1 - f * c))

    cases = [
        ("utilization", u * (1 - s), min(1.0, u * (1 + s)), lambda v: m(utilization=v)),
        ("price", 1 - s, 1 + s, lambda v: m(price_scale=scale * v)),
        ("throughput", tok * (1 - s), tok * (1 + s), lambda v: m(output_tok_s_per_gpu=v)),
        ("usd_per_gpu_hour", rate * (1 - s), rate * (1 + s), lambda v: m(usd_per_gpu_hour=v)),
        ("cached_share", c_lo, c_hi, with_cache),
    ]
    rows = []
    for name, lo, hi, fn in cases:
        m_lo, m_hi = fn(lo), fn(hi)
        rows.append({"factor": name, "low_value": lo, "high_value": hi, "margin_at_low": m_lo,
                     "margin_at_high": m_hi, "base_margin": base, "span": abs(m_hi - m_lo)})
    rows.sort(key=lambda r: r["span"], reverse=True)
    return rows
