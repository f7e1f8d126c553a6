"""Fleets and plans built on the unit economics of bench.econ.margin: subscriptions (flat fee vs
token usage), private and shared deployments (GPUs reserved per customer vs pooled), fleet sizing
for a daily token volume, and the what-if bundle that answers `maas-bench margin`'s what-if form.

Why a module of its own: margin.py is the per-request model (revenue vs cost of the same requests);
this is the layer that multiplies it out over customers, months and GPUs. Same units and the same
utilization convention (0, 1] as margin.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.econ import bounds
from bench.econ.cost import (
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    TOKENS_PER_M,
    require_non_negative,
    require_positive,
    require_utilization,
    usd_per_m_tokens,
)
from bench.econ.margin import (  # the per-request model: one Offer, validated once
    Offer,
    PriceLike,
    TrafficMix,
    api_margin,
    break_even_price,
    break_even_tok_s_per_gpu,
    break_even_utilization,
    margin_vs_utilization,
)
from bench.econ.scenarios import margin_sensitivity, price_decline_scenarios
from bench.errors import UserInputError

# --- subscriptions ----------------------------------------------------------------------------

SECONDS_PER_DAY = 86400.0
DAYS_PER_MONTH = 365.0 / 12


def subscriber_margin(monthly_fee_usd: float, requests_per_month: float, offer: Offer) -> dict[str, float]:
    """One subscriber paying a flat fee and sending `requests_per_month` requests of the offer's mix,
    each costing the offer's cost per request (its price is not used: the fee is the revenue)."""
    require_positive("monthly_fee_usd", monthly_fee_usd)
    require_non_negative("requests_per_month", requests_per_month)
    per_req = offer.cost_usd()
    cost = requests_per_month * per_req
    return {
        "monthly_fee_usd": monthly_fee_usd,
        "requests_per_month": requests_per_month,
        "cost_usd_per_request": per_req,
        "cost_usd_per_month": cost,
        "margin_usd_per_month": monthly_fee_usd - cost,
        "gross_margin": 1 - cost / monthly_fee_usd,
        "break_even_requests_per_month": monthly_fee_usd / per_req,
    }


def lognormal_samples(median: float, sigma: float, n: int, seed: int = 0) -> np.ndarray:
    """`n` seeded lognormal draws with the given median (heavy-tailed usage: few users send a lot)."""
    require_positive("median", median)
    require_non_negative("sigma", sigma)
    bounds.check("requests_sigma", sigma, "--requests-sigma")
    if n <= 0:
        raise UserInputError(f"n must be > 0 (got {n})")
    rng = np.random.default_rng(seed)
    return median * np.exp(sigma * rng.standard_normal(n))


@dataclass(frozen=True)
class SubscriptionResult:
    """A plan's economics over a population of subscribers."""

    subscribers: int
    monthly_fee_usd: float
    mean_margin_usd_per_subscriber: float
    gross_margin: float  # 1 - total cost / total fees
    share_served_at_loss: float  # fraction of subscribers whose cost exceeds the fee
    cost_usd_per_request: float
    break_even_requests_per_month: float
    cost_usd_p50: float
    cost_usd_p90: float
    cost_usd_p99: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def subscription_plan(
    monthly_fee_usd: float,
    requests_per_month: Sequence[float] | np.ndarray,
    offer: Offer,
    *,
    tokens_scale: Sequence[float] | np.ndarray | None = None,
) -> SubscriptionResult:
    """Margin of a flat monthly plan over subscribers with given requests/month each (requests of the
    offer's mix at its cost per request; its price is not used).

    `tokens_scale[i]` multiplies subscriber i's tokens per request (both input and output, so the
    mix ratio and hence the per-token cost stay the same); default 1. Use `lognormal_samples` for a
    distribution.
    """
    require_positive("monthly_fee_usd", monthly_fee_usd)
    reqs = np.asarray(requests_per_month, dtype=float)
    if reqs.size == 0 or np.any(~np.isfinite(reqs)) or np.any(reqs < 0):
        raise UserInputError("requests_per_month must be a non-empty list of numbers >= 0")
    scale = np.ones_like(reqs) if tokens_scale is None else np.asarray(tokens_scale, dtype=float)
    if scale.shape != reqs.shape or np.any(scale <= 0):
        raise UserInputError("tokens_scale must have one value > 0 per subscriber")
    per_req = offer.cost_usd()
    costs = reqs * scale * per_req
    return SubscriptionResult(
        subscribers=int(reqs.size),
        monthly_fee_usd=monthly_fee_usd,
        mean_margin_usd_per_subscriber=float(monthly_fee_usd - costs.mean()),
        gross_margin=float(1 - costs.sum() / (monthly_fee_usd * reqs.size)),
        share_served_at_loss=float(np.mean(costs > monthly_fee_usd)),
        cost_usd_per_request=per_req,
        break_even_requests_per_month=monthly_fee_usd / per_req,
        cost_usd_p50=float(np.percentile(costs, 50)),
        cost_usd_p90=float(np.percentile(costs, 90)),
        cost_usd_p99=float(np.percentile(costs, 99)),
    )


# --- private and shared deployments -----------------------------------------------------------


def private_deployment(
    gpus: int,
    price_usd_per_year: float,
    usd_per_gpu_hour: float,
    extra_cost_usd_per_year: float = 0.0,
) -> dict[str, float]:
    """A dedicated cluster of `gpus` sold for a yearly price, against its cost for all 8760 hours.

    Use the 'tco' rate for owned on-prem hardware. Utilization does not enter: the customer pays
    for the cluster whether or not it is busy.
    """
    if not isinstance(gpus, int) or gpus <= 0:
        raise UserInputError(f"gpus must be a whole number > 0 (got {gpus})")
    require_positive("price_usd_per_year", price_usd_per_year)
    require_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    require_non_negative("extra_cost_usd_per_year", extra_cost_usd_per_year)
    cost = gpus * usd_per_gpu_hour * HOURS_PER_YEAR + extra_cost_usd_per_year
    return {
        "gpus": gpus,
        "revenue_usd_per_year": price_usd_per_year,
        "cost_usd_per_year": cost,
        "margin_usd_per_year": price_usd_per_year - cost,
        "gross_margin": 1 - cost / price_usd_per_year,
        "break_even_price_usd_per_year": cost,
    }


def shared_deployment(
    gpus: int,
    usd_per_gpu_hour: float,
    tenants: int,
    fee_usd_per_tenant_per_year: float,
    *,
    output_tok_s_per_gpu: float | None = None,
    utilization: float = 1.0,
) -> dict[str, float | None]:
    """"Deploy once, many tenants": one cluster, `tenants` paying a yearly fee each.

    With a throughput, also reports the output tokens each tenant can use per day at `utilization`
    and the resulting cost per M output tokens.
    """
    if not isinstance(tenants, int) or tenants <= 0:
        raise UserInputError(f"tenants must be a whole number > 0 (got {tenants})")
    require_positive("fee_usd_per_tenant_per_year", fee_usd_per_tenant_per_year)
    require_utilization(utilization)
    dedicated = private_deployment(gpus, fee_usd_per_tenant_per_year * tenants, usd_per_gpu_hour)
    out: dict[str, float | None] = {
        "gpus": gpus,
        "tenants": tenants,
        "revenue_usd_per_year": dedicated["revenue_usd_per_year"],
        "cost_usd_per_year": dedicated["cost_usd_per_year"],
        "margin_usd_per_year": dedicated["margin_usd_per_year"],
        "gross_margin": dedicated["gross_margin"],
        "break_even_tenants": math.ceil(dedicated["cost_usd_per_year"] / fee_usd_per_tenant_per_year - 1e-9),
        "output_tokens_per_tenant_per_day": None,
        "cost_usd_per_m_output_tokens": None,
    }
    if output_tok_s_per_gpu is not None:
        require_positive("tok_s_per_gpu", output_tok_s_per_gpu)
        out["output_tokens_per_tenant_per_day"] = (
            gpus * output_tok_s_per_gpu * utilization * SECONDS_PER_DAY / tenants
        )
        out["cost_usd_per_m_output_tokens"] = usd_per_m_tokens(
            output_tok_s_per_gpu, usd_per_gpu_hour, utilization
        )
    return out


# --- fleet sizing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetPlan:
    """GPUs to serve a daily token volume at its peak, their monthly cost and (with a price) margin."""

    tokens_per_day: float  # input + output tokens
    requests_per_day: float
    avg_output_tok_s: float
    gpus_busy_avg: float
    gpus_needed_at_peak: float
    replicas: int
    gpus: int
    avg_utilization: float
    monthly_cost_usd: float
    cost_usd_per_m_tokens: float  # per M input + output tokens actually served
    monthly_revenue_usd: float | None
    gross_margin: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fleet_size(
    tokens_per_day: float,
    mix: TrafficMix,
    output_tok_s_per_gpu: float,
    usd_per_gpu_hour: float,
    *,
    peak_to_average: float = 1.0,
    gpus_per_replica: int = 1,
    max_utilization_at_peak: float = 1.0,
    price: PriceLike | None = None,
    usd_per_cny: float | None = None,
) -> FleetPlan:
    """Size a fleet for `tokens_per_day` (input + output) of `mix` at an SLO-feasible throughput.

    requests/day = tokens_per_day / (input + output); average busy GPUs = requests/s x GPU-s/request;
    the fleet must carry peak = average x peak_to_average at no more than `max_utilization_at_peak`,
    in whole replicas of `gpus_per_replica` (e.g. 8 for TP8). Monthly = 730 h, 365/12 days.
    Why not an Offer argument: a fleet's utilization is an output of sizing, not an input.
    """
    require_positive("tokens_per_day", tokens_per_day)
    bounds.check("tokens_per_day", tokens_per_day, "--tokens-per-day")
    bounds.check("output_tok_s_per_gpu", output_tok_s_per_gpu, "output tok/s per GPU")
    bounds.check("usd_per_gpu_hour", usd_per_gpu_hour, "usd_per_gpu_hour")
    bounds.check("input_tokens", mix.input_tokens, "input tokens per request")
    bounds.check("output_tokens", mix.output_tokens, "output tokens per request")
    offer = Offer(mix, price, output_tok_s_per_gpu, usd_per_gpu_hour, 1.0, usd_per_cny)
    if not math.isfinite(peak_to_average) or peak_to_average < 1:
        raise UserInputError(f"peak_to_average must be >= 1 (got {peak_to_average})")
    bounds.check("peak_to_average", peak_to_average, "--peak-to-average")
    if not isinstance(gpus_per_replica, int) or gpus_per_replica <= 0:
        raise UserInputError(f"gpus_per_replica must be a whole number > 0 (got {gpus_per_replica})")
    require_utilization(max_utilization_at_peak, "max_utilization_at_peak")
    requests_per_day = tokens_per_day / mix.total_tokens
    busy_avg = requests_per_day * offer.gpu_s_per_request / SECONDS_PER_DAY
    need_peak = busy_avg * peak_to_average / max_utilization_at_peak
    replicas = max(1, math.ceil(need_peak / gpus_per_replica - 1e-9))
    gpus = replicas * gpus_per_replica
    monthly_cost = gpus * usd_per_gpu_hour * HOURS_PER_MONTH
    tokens_per_month = tokens_per_day * DAYS_PER_MONTH
    revenue = margin = None
    if price is not None:
        revenue = requests_per_day * DAYS_PER_MONTH * offer.revenue_usd
        margin = 1 - monthly_cost / revenue
    return FleetPlan(
        tokens_per_day=tokens_per_day,
        requests_per_day=requests_per_day,
        avg_output_tok_s=requests_per_day * mix.output_tokens / SECONDS_PER_DAY,
        gpus_busy_avg=busy_avg,
        gpus_needed_at_peak=need_peak,
        replicas=replicas,
        gpus=gpus,
        avg_utilization=busy_avg / gpus,
        monthly_cost_usd=monthly_cost,
        cost_usd_per_m_tokens=monthly_cost / tokens_per_month * TOKENS_PER_M,
        monthly_revenue_usd=revenue,
        gross_margin=margin,
    )


# --- what-if bundle (one call answers the `maas-bench margin` what-if form) ----------------------


@dataclass(frozen=True)
class SubscriptionQuery:
    """A subscription plan to evaluate: monthly fee (USD), requests a month, lognormal spread (0 = none)."""

    fee_usd: float
    requests_per_month: float
    requests_sigma: float = 0.0


def what_if(
    offer: Offer,
    *,
    target_margin: float = 0.0,
    years: int = 1,
    price_declines: Sequence[float] = (0.5, 0.8),
    hw_decline: float = 0.0,
    sensitivity: bool = False,
    prefill_fraction: float = 0.0,
    curve: bool = False,
    subscription: SubscriptionQuery | None = None,
) -> dict[str, Any]:
    """Margin, break-even (utilization, price, throughput), price-decline scenarios and, on request,
    sensitivity rows, the margin-vs-utilization curve and a subscription plan, for one offer."""
    margin = api_margin(offer)
    be_price = break_even_price(offer, target_margin)
    out: dict[str, Any] = {
        "margin": margin.to_dict(),
        "break_even": {
            "target_margin": target_margin,
            "utilization": break_even_utilization(offer, target_margin),
            "price_scale": be_price.scale,
            "output_usd_per_m": be_price.output_usd_per_m,
            "input_usd_per_m": be_price.input_usd_per_m,
            "blended_usd_per_m_tokens": be_price.blended_usd_per_m_tokens,
            "output_tok_s_per_gpu": break_even_tok_s_per_gpu(offer, target_margin),
        },
        "price_decline": {
            f"{d:g}": price_decline_scenarios(offer, years=years, price_decline_per_year=d,
                                              hw_cost_decline_per_year=hw_decline, target_margin=target_margin)
            for d in price_declines
        },
    }
    if sensitivity:
        out["sensitivity"] = margin_sensitivity(offer, prefill_fraction=prefill_fraction)
    if curve:
        out["curve"] = margin_vs_utilization(offer)
    if subscription is not None:
        sub = subscription
        out["subscription"] = {"one_subscriber": subscriber_margin(sub.fee_usd, sub.requests_per_month, offer)}
        if sub.requests_sigma > 0:
            samples = lognormal_samples(sub.requests_per_month, sub.requests_sigma, 10000, seed=0)
            out["subscription"]["population"] = subscription_plan(sub.fee_usd, samples, offer).to_dict()
    return out
