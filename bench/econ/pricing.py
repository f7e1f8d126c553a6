"""The revenue side of a request: its traffic mix and the USD prices that apply to it.

Why a module of its own: every margin question (bench.econ.margin), its scenarios (bench.econ.scenarios)
and the fleet layer (bench.econ.fleet) price the same request the same way; this is the one place the
price book meets a request. Model (stated once, here):
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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.config.hardware import convert_to_usd
from bench.config.prices import PriceEntry
from bench.econ.cost import TOKENS_PER_M, require_fraction, require_non_negative, require_positive
from bench.errors import UserInputError


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


def require_revenue(revenue: float) -> float:
    """`revenue` (USD per request) when positive; a margin over zero revenue is undefined."""
    if revenue <= 0:
        raise UserInputError("price: revenue per request is 0 at this price and mix; prices must be > 0")
    return revenue
