"""MaaS unit economics: what a token sells for against what it costs to make.

Everything here compares the revenue and the cost of the *same requests*, so no input/output cost
split is needed (see bench.econ.cost.split_cost for why reports still show one).

Model (stated once, here; the revenue side, TrafficMix and the price book, is in bench.econ.pricing):
- Throughput is output tok/s per GPU measured (or assumed) *on that mix*; one request then uses
  output_tokens / tok_s GPU-seconds, prefill included, and costs that times $/GPU-hour / 3600 / U
  (bench.econ.cost.usd_per_request). Utilization U in (0, 1]: benchmarks measure a full server, a
  fleet is busy only U of the time.
- Gross margin = 1 - cost / revenue. Margin per M tokens counts input + output tokens.
- A cached share changes revenue at once; it changes cost only through the measured throughput
  (measure with prefix caching on), or, in bench.econ.scenarios.margin_sensitivity, through
  `prefill_fraction`.

Every question takes one `Offer` (mix, price, throughput, $/GPU-hour, U, exchange rate; optionally a list-price
scale and the requests to price one by one): the inputs are validated once and revenue and cost per request
are computed in one place. Every surface (the `margin` tables and --json, --explain, `plan`, the report's
tables, sentences and figures) reads its money figures from one Offer per point (`point_offers`).
Public API: Offer, api_margin -> ApiMargin; break_even_utilization, break_even_price -> BreakEvenPrice,
break_even_tok_s_per_gpu; margin_vs_utilization (rows for the margin-vs-utilization plot);
margin_per_point, best_point. TrafficMix, UsdPrices, usd_prices and revenue_usd_per_request come from
bench.econ.pricing (importable from here too). Price-decline scenarios and sensitivity rows are in
bench.econ.scenarios; subscriptions, deployments, fleet sizing and the what-if bundle in bench.econ.fleet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

from bench.config.slo import SLO_METRICS, Slo
from bench.econ.cache import GIVEN_REVENUE_ONLY, MEASURED, NONE, measured_cached_share, revenue_usd_per_gpu_hour
from bench.econ.cost import (
    SECONDS_PER_HOUR,
    TOKENS_PER_M,
    require_fraction,
    require_positive,
    require_utilization,
    usd_per_m_tokens,
    usd_per_request,
)
from bench.econ.pricing import (
    PriceLike,
    RequestTokens,
    TrafficMix,
    UsdPrices,
    mean_finite,
    require_revenue,
    revenue_usd_per_request,
    revenue_usd_per_request_each,
    usd_prices,
)
from bench.errors import UserInputError

__all__ = [
    "ApiMargin", "BreakEvenPrice", "Offer", "PointOffer", "PriceLike", "RequestTokens", "TrafficMix", "UsdPrices",
    "api_margin", "best_point", "break_even_price", "break_even_tok_s_per_gpu", "break_even_utilization",
    "margin_per_point", "margin_vs_utilization", "point_offers", "point_row", "revenue_usd_per_request",
    "usd_prices",
]


@dataclass(frozen=True)
class Offer:
    """One margin question's inputs: `mix` sold at `price`, served by a GPU doing `output_tok_s_per_gpu`
    on that mix at `usd_per_gpu_hour`, busy `utilization` of the time (CNY prices at `usd_per_cny`).

    Why an object: margin, the break-evens, scenarios, sensitivity, subscriptions and the what-if bundle
    all ask about these same inputs; they are validated here once (one error line naming the bad field)
    and revenue and cost per request have one definition each. `price` may be None for cost-only
    questions (subscriptions); asking such an offer for revenue is an error naming `price`.
    A question that solves for one input (break-even utilization or throughput) ignores that field.
    `price_scale` multiplies every list price (a 50% cut is 0.5; tiers are kept). `requests`, when given,
    are priced one by one, each at its own tier, and revenue per request is their mean; `mix` is then their
    mean request (RequestTokens.mix), which the cost side uses.
    """

    mix: TrafficMix
    price: PriceLike | None
    output_tok_s_per_gpu: float
    usd_per_gpu_hour: float
    utilization: float = 1.0
    usd_per_cny: float | None = None
    price_scale: float = 1.0
    requests: RequestTokens | None = None

    def __post_init__(self) -> None:
        require_positive("tok_s_per_gpu", self.output_tok_s_per_gpu)
        require_positive("usd_per_gpu_hour", self.usd_per_gpu_hour)
        require_utilization(self.utilization)
        require_positive("price_scale", self.price_scale)

    @cached_property
    def prices(self) -> UsdPrices:
        """USD prices for a request of this mix (the entry's tier for its lengths, CNY converted, times
        price_scale). With `requests`, the tier of their mean request (revenue prices each at its own)."""
        if self.price is None:
            raise UserInputError("price: needed for revenue and margin; allowed: a price-book entry <model>@<provider>")
        p = usd_prices(self.price, self.mix, self.usd_per_cny)
        return p if self.price_scale == 1 else p.scaled(self.price_scale)

    @cached_property
    def revenue_usd(self) -> float:
        """Revenue of one request (> 0, else an error: a margin over zero revenue is undefined); with
        `requests`, the mean over them, each at its own tier."""
        if self.requests is None:
            return require_revenue(revenue_usd_per_request(self.mix, self.prices))
        self.prices  # noqa: B018 - the one error line when there is no price
        each = revenue_usd_per_request_each(self.price, self.requests, self.usd_per_cny,  # type: ignore[arg-type]
                                            self.mix.write_share)
        return require_revenue(mean_finite(each) * self.price_scale)

    @cached_property
    def revenue_usd_mean_request(self) -> float:
        """Revenue of the mean request at the mean request's tier (equals revenue_usd without `requests`):
        shown next to the per-request figure so a reader sees what per-request tiers change."""
        return require_revenue(revenue_usd_per_request(self.mix, self.prices))

    @property
    def gpu_s_per_request(self) -> float:
        """GPU-seconds one request uses: its output tokens at the throughput measured on its mix."""
        return self.mix.output_tokens / self.output_tok_s_per_gpu

    def cost_usd(self, utilization: float | None = None) -> float:
        """GPU cost of one request at `utilization` (default: the offer's): GPU-s x $/h / 3600 / U."""
        u = self.utilization if utilization is None else utilization
        return usd_per_request(self.gpu_s_per_request, self.usd_per_gpu_hour, u)

    def but(self, **changes: Any) -> Offer:
        """The same offer with some fields changed (validated again)."""
        return replace(self, **changes)


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
    cached_share: float = 0.0  # the share of input tokens billed (and, when measured, served) as cache hits
    break_even_utilization: float = 0.0  # the U at which gross margin is 0 (above 1: a loss at any U)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def api_margin(offer: Offer) -> ApiMargin:
    """Gross margin of per-token API sales of the offer's mix at its price, throughput and utilization."""
    revenue = offer.revenue_usd
    cost = offer.cost_usd()
    per_m = TOKENS_PER_M / offer.mix.total_tokens
    tok, u = offer.output_tok_s_per_gpu, offer.utilization
    out = ApiMargin(
        revenue_usd_per_request=revenue,
        cost_usd_per_request=cost,
        gross_margin=1.0 - cost / revenue,
        margin_usd_per_request=revenue - cost,
        margin_usd_per_m_tokens=(revenue - cost) * per_m,
        revenue_usd_per_m_tokens=revenue * per_m,
        cost_usd_per_m_tokens=cost * per_m,
        cost_usd_per_m_output_tokens=usd_per_m_tokens(tok, offer.usd_per_gpu_hour, u),
        gpu_s_per_request=offer.gpu_s_per_request,
        utilization=u,
        revenue_usd_per_gpu_hour=revenue_usd_per_gpu_hour(revenue, offer.mix.output_tokens, tok, u),
        cost_usd_per_gpu_hour=offer.usd_per_gpu_hour,
        cached_share=offer.mix.cached_share,
        break_even_utilization=offer.cost_usd(1.0) / revenue,
    )
    bad = [k for k, v in asdict(out).items() if not math.isfinite(v)]
    if bad:
        raise UserInputError(f"{bad[0]}: not a finite number at these inputs; allowed: inputs within "
                             "bench.econ.bounds")
    return out


# --- break-even -------------------------------------------------------------------------------


def break_even_utilization(offer: Offer, target_margin: float = 0.0) -> float:
    """Utilization at which gross margin equals `target_margin`: U = cost(U=1) / (revenue x (1 - m)).

    The offer's own utilization is not used. Below the result the fleet loses (or misses the target).
    A value above 1 means even a fully busy fleet cannot reach the target at this price and throughput.
    """
    m = _target(target_margin)
    return offer.cost_usd(1.0) / (offer.revenue_usd * (1 - m))


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


def break_even_price(offer: Offer, target_margin: float = 0.0) -> BreakEvenPrice:
    """Scale of today's price list at which margin equals `target_margin`: k = cost / (revenue x (1 - m)).

    Prices move together (the input:cached:output ratios of the entry are kept), which is how
    providers cut list prices; below k x list the mix is sold at a loss (or under the target).
    """
    m = _target(target_margin)
    revenue = offer.revenue_usd
    k = offer.cost_usd() / (revenue * (1 - m))
    p = offer.prices.scaled(k)
    return BreakEvenPrice(
        scale=k,
        input_usd_per_m=p.input_usd_per_m,
        cached_input_usd_per_m=p.cached_or_input_usd_per_m,
        output_usd_per_m=p.output_usd_per_m,
        blended_usd_per_m_tokens=revenue * k / offer.mix.total_tokens * TOKENS_PER_M,
        target_margin=m,
    )


def break_even_tok_s_per_gpu(offer: Offer, target_margin: float = 0.0) -> float:
    """Output tok/s per GPU needed for `target_margin`: out x $/h / (3600 x U x revenue x (1 - m)).

    The offer's own throughput is not used (it is what the answer is compared with)."""
    m = _target(target_margin)
    return offer.mix.output_tokens * offer.usd_per_gpu_hour / (
        SECONDS_PER_HOUR * offer.utilization * offer.revenue_usd * (1 - m))


def margin_vs_utilization(offer: Offer, utilizations: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Rows {utilization, gross_margin, cost_usd_per_m_output_tokens, ...} for a margin-vs-U plot.

    Default grid 0.05, 0.10, ..., 1.00 (the offer's own utilization is not used). Mark the break-even
    with `break_even_utilization(offer)`.
    """
    grid = list(utilizations) if utilizations is not None else [round(0.05 * i, 2) for i in range(1, 21)]
    rows = []
    for u in grid:
        r = api_margin(offer.but(utilization=u))
        rows.append({
            "utilization": u,
            "gross_margin": r.gross_margin,
            "cost_usd_per_m_output_tokens": r.cost_usd_per_m_output_tokens,
            "cost_usd_per_request": r.cost_usd_per_request,
            "revenue_usd_per_request": r.revenue_usd_per_request,
        })
    return rows


# --- measured points --------------------------------------------------------------------------

SLO_COLUMN_PREFIXES = tuple(f"{m}_" for m in SLO_METRICS)


@dataclass(frozen=True)
class PointOffer:
    """One measured point and the one Offer every money figure of it comes from."""

    record: dict[str, Any]
    offer: Offer
    cached_share_source: str  # MEASURED, GIVEN_REVENUE_ONLY or NONE (bench.econ.cache)
    revenue_basis: str  # how revenue per request was priced (each measured request at its tier, or the mean)


def point_offers(
    points: Any,
    price: PriceLike | None,
    utilization: float,
    *,
    mix: TrafficMix | None = None,
    cached_share: float = 0.0,
    cache_write_share: float | None = None,
    usd_per_gpu_hour: float | None = None,
    usd_per_cny: float | None = None,
    requests: dict[str, Any] | None = None,
) -> list[PointOffer]:
    """The Offer of every successful point of a results table (a DataFrame from bench.sweep.store.load_results).

    Each point is priced at its own measured mix (input_tokens / completed, output_tokens / completed:
    those columns are totals over the point) unless `mix` is given; the GPU rate is the point's
    `usd_per_gpu_hour` unless `usd_per_gpu_hour` is given. Failed points are skipped.
    The cache counts on both sides at the point's *measured* hit rate when it has one
    (`cached_input_frac`: revenue bills those tokens at the cached price, and the cost uses the
    throughput measured at that hit rate); only a point without a measurement uses `cached_share`
    (revenue only: its throughput is what was measured). `cache_write_share` is billed as cache writes.
    `requests` maps point_id -> that point's per-request table (bench.sweep.store.load_requests): with it,
    each measured request is priced at its own tier (RequestTokens.from_frame); without, the mean request.
    """
    require_utilization(utilization)
    out: list[PointOffer] = []
    for rec in points.to_dict("records"):
        if rec.get("status", "ok") != "ok":
            continue
        tok = rec.get("output_tok_s_per_gpu")
        rate = usd_per_gpu_hour if usd_per_gpu_hour is not None else rec.get("usd_per_gpu_hour")
        if not _num_ok(tok) or not _num_ok(rate):
            continue
        measured = None
        reqs = None
        if mix is not None:
            pmix = mix
        else:
            done = rec.get("completed") or 0
            if not done or not _num_ok(rec.get("output_tokens")):
                continue
            measured = measured_cached_share(rec)
            share = measured if measured is not None else cached_share
            pmix = TrafficMix(rec["input_tokens"] / done, rec["output_tokens"] / done, share, cache_write_share)
            frame = (requests or {}).get(str(rec.get("point_id")))
            reqs = RequestTokens.from_frame(frame, share) if frame is not None else None
            if reqs is not None:  # the mean of the requests priced is the mix the cost side uses
                m = reqs.mix
                pmix = TrafficMix(m.input_tokens, m.output_tokens, m.cached_share if measured is not None else share,
                                  cache_write_share)
        source = (MEASURED if measured is not None
                  else GIVEN_REVENUE_ONLY if pmix.cached_share > 0 else NONE)
        basis = (f"each of {len(reqs)} measured requests at its own price tier" if reqs is not None
                 else "the mean request (no per-request records)" if mix is None else "the given mix")
        offer = Offer(pmix, price, float(tok), float(rate), utilization, usd_per_cny, requests=reqs)
        out.append(PointOffer(rec, offer, source, basis))
    return out


def point_row(po: PointOffer) -> dict[str, Any]:
    """The row of money figures of one point, all from its one Offer (revenue figures None without a price)."""
    rec, offer = po.record, po.offer
    row = {k: rec.get(k) for k in ("run_id", "point_id", "model", "quantization", "gpu_type", "gpu_count",
                                    "concurrency", "request_rate")}
    if row["run_id"] is None:
        row.pop("run_id")
    mix = offer.mix
    cost = offer.cost_usd()
    per_m = TOKENS_PER_M / mix.total_tokens
    row.update({
        "input_tokens_per_request": mix.input_tokens,
        "output_tokens_per_request": mix.output_tokens,
        "enable_prefix_caching": rec.get("enable_prefix_caching"),
        "prefix_cache_hit_rate": rec.get("prefix_cache_hit_rate"),
        "cached_share": mix.cached_share,
        "cached_share_source": po.cached_share_source,
        "cache_write_share": mix.write_share,
        "output_tok_s_per_gpu": offer.output_tok_s_per_gpu,
        "usd_per_gpu_hour": offer.usd_per_gpu_hour,
        **{k: rec.get(k) for k in rec if k.startswith(SLO_COLUMN_PREFIXES)},  # what an Slo reads
        "utilization": offer.utilization,
        "cost_usd_per_request": cost,
        "cost_usd_per_m_output_tokens": cost / mix.output_tokens * TOKENS_PER_M,
        "cost_usd_per_m_tokens": cost * per_m,
        "cost_usd_per_gpu_hour": offer.usd_per_gpu_hour,
        "revenue_basis": po.revenue_basis,
        "revenue_usd_per_request": None, "revenue_usd_per_request_mean_request": None,
        "revenue_usd_per_m_tokens": None, "revenue_usd_per_gpu_hour": None, "gross_margin": None,
        "margin_usd_per_m_tokens": None, "break_even_utilization": None,
    })
    if offer.price is not None:
        r = api_margin(offer)
        row.update({
            "revenue_usd_per_request": r.revenue_usd_per_request,
            "revenue_usd_per_request_mean_request": offer.revenue_usd_mean_request,
            "revenue_usd_per_m_tokens": r.revenue_usd_per_m_tokens,
            "revenue_usd_per_gpu_hour": r.revenue_usd_per_gpu_hour,
            "gross_margin": r.gross_margin,
            "margin_usd_per_m_tokens": r.margin_usd_per_m_tokens,
            "break_even_utilization": r.break_even_utilization,
        })
    return row


def margin_per_point(points: Any, price: PriceLike | None, utilization: float, **options: Any) -> list[dict[str, Any]]:
    """One row of money figures per successful point: `point_row` of each of `point_offers`, which takes the
    same arguments (its keyword options: mix, cached_share, cache_write_share, usd_per_gpu_hour, usd_per_cny,
    requests)."""
    return [point_row(po) for po in point_offers(points, price, utilization, **options)]


def _num_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def best_point(rows: Sequence[dict[str, Any]], slo: Slo | None = None) -> dict[str, Any] | None:
    """The point with the highest gross margin among those meeting `slo` (None if none does)."""
    ok = [r for r in rows if (slo is None or slo.met_by(r)) and r.get("gross_margin") is not None]
    return max(ok, key=lambda r: r["gross_margin"]) if ok else None
