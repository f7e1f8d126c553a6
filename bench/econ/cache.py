"""Prefix-cache economics: the cache hit rate a margin uses, and what a GPU-hour sells for.

Why a module of its own: a cache hit cuts both sides of a margin, and the two cuts come from
different places. Revenue: cached input tokens are billed at the cached price (Z.ai: about a fifth
of the input price), so a higher hit rate *lowers* revenue per request. Cost: the prefill of cached
tokens is skipped, so more requests fit a GPU-hour. A margin must take both at the same hit rate:
- measured (`margin --results`): the hit rate is the point's own `cached_input_frac` (the
  requests' usage.prompt_tokens_details.cached_tokens over their prompt tokens) and the cost uses
  the throughput measured at that hit rate. Nothing is assumed.
- estimated (a given `--cached-share` without a measurement): revenue bills that share at the
  cached price, and the throughput is scaled as if the prefill work shrank to (1 - share) of it
  (`prefill_scaled_tok_s`, or the planner's roofline with its `cached_share`); the result is
  marked an estimate.

Token revenue per GPU-hour (price book x mix, cached tokens included, at utilization U) next to
cost per GPU-hour is the headline a MaaS team reads first; margin = 1 - cost / revenue per GPU-hour
is the same number as 1 - cost / revenue per request.
"""

from __future__ import annotations

import math
from typing import Any

from bench.econ.cost import HOURS_PER_MONTH, SECONDS_PER_HOUR, require_fraction, require_positive, require_utilization

MEASURED, GIVEN_REVENUE_ONLY, NONE = ("measured", "given (revenue only: throughput as measured)", "none")


def measured_cached_share(point: dict[str, Any]) -> float | None:
    """The share of prompt tokens a point's server served from its prefix cache (None: not measured)."""
    v = point.get("cached_input_frac")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1:
        return float(v)
    return None


def revenue_usd_per_gpu_hour(revenue_usd_per_request: float, output_tokens_per_request: float,
                             output_tok_s_per_gpu: float, utilization: float) -> float:
    """What one GPU-hour sells for: revenue per request x requests the GPU serves in an hour at U.

    A GPU busy U of the hour serves output_tok_s x 3600 x U / output_tokens requests.
    """
    require_positive("output_tokens", output_tokens_per_request)
    require_positive("output_tok_s_per_gpu", output_tok_s_per_gpu)
    require_utilization(utilization)
    return revenue_usd_per_request * output_tok_s_per_gpu * SECONDS_PER_HOUR * utilization / output_tokens_per_request


def prefill_scaled_tok_s(output_tok_s_per_gpu: float, cached_share: float, prefill_fraction: float) -> float:
    """Throughput when the cache removes `cached_share` of the prefill work (an estimate).

    With prefill taking a fraction f of a request's GPU time when nothing is cached, caching a share
    c leaves (1 - f) + f (1 - c) = 1 - f c of it, so tok/s grows by 1 / (1 - f c).
    """
    c = require_fraction("cached_share", cached_share)
    f = require_fraction("prefill_fraction", prefill_fraction, upper_open=True)
    require_positive("output_tok_s_per_gpu", output_tok_s_per_gpu)
    return output_tok_s_per_gpu / (1 - f * c)


def fleet_usd_per_gpu_hour(monthly_revenue_usd: float | None, gpus: int, usd_per_gpu_hour: float) -> dict[str, Any]:
    """A sized fleet's revenue and cost per GPU-hour (at its average utilization: every GPU is paid
    for every hour, revenue comes from the traffic it serves)."""
    revenue = monthly_revenue_usd / (gpus * HOURS_PER_MONTH) if monthly_revenue_usd is not None else None
    return {"revenue_usd_per_gpu_hour": revenue, "cost_usd_per_gpu_hour": usd_per_gpu_hour}
