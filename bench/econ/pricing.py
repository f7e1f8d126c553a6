"""The revenue side of a request: its traffic mix and the USD prices that apply to it.

Why a module of its own: every margin question (bench.econ.margin), its scenarios (bench.econ.scenarios)
and the fleet layer (bench.econ.fleet) price the same request the same way; this is the one place the
price book meets a request. Model (stated once, here):
- A traffic mix is a request of `input_tokens` prompt tokens (a `cached_share` of them are prefix
  cache hits) and `output_tokens` generated tokens.
- Revenue per request = uncached input x p_in + cached input x p_cached + output x p_out, prices per
  million tokens from the price book (CNY converted with the explicit, dated exchange rate `FxRate`), at
  the tier the request's input AND output length fall in.
- Tiers are per request: a set of requests (`RequestTokens`: the measured ones of a point, or a stated
  length distribution) is priced request by request at each one's own tier, and revenue per request is
  their mean. Pricing the mean request instead misprices output-length tiers (bigmodel bills a request
  with < 200 output tokens at a third of the output price) whenever lengths spread across a boundary.
- Cache writes: where a provider charges for writing the cache (MiniMax: cache_write_per_m), the written
  input tokens are billed at p_write instead of p_in. Which tokens are written is an explicit input,
  `TrafficMix.cache_write_share`, default DEFAULT_CACHE_WRITE_SHARE = 0: MiniMax charges writes only for
  blocks the caller marks with `cache_control` (its "active caching", platform.minimax.io/docs/api-reference/
  anthropic-api-compatible-cache); its automatic prefix cache, and every other provider here, bill no
  write. A workload that marks its prompts states the written share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.config.hardware import convert_to_usd
from bench.config.prices import PriceEntry
from bench.econ import bounds
from bench.econ.cost import TOKENS_PER_M, require_fraction, require_non_negative, require_positive
from bench.errors import UserInputError

# Share of prompt tokens billed as cache writes when none is stated (see the module docstring for why 0).
DEFAULT_CACHE_WRITE_SHARE = 0.0
CACHE_WRITE_SOURCE = ("MiniMax bills cache writes only for blocks marked with cache_control (active caching, "
                      "platform.minimax.io/docs/api-reference/anthropic-api-compatible-cache); default 0 written")


@dataclass(frozen=True)
class FxRate:
    """The CNY->USD rate a conversion used, with its date and source (shown wherever CNY becomes USD)."""

    usd_per_cny: float
    as_of: str | None = None
    source: str = ""
    source_date: str | None = None

    def text(self) -> str:
        date = self.as_of or "undated"
        return f"{self.usd_per_cny:g} USD/CNY (as of {date}; {self.source or 'no source given'})"

    def to_dict(self) -> dict[str, Any]:
        return {"usd_per_cny": self.usd_per_cny, "as_of": self.as_of, "source_date": self.source_date,
                "source": self.source}


@dataclass(frozen=True)
class TrafficMix:
    """Tokens per request: `input_tokens` prompt (of which `cached_share` hit the prefix cache)."""

    input_tokens: float
    output_tokens: float
    cached_share: float = 0.0
    cache_write_share: float | None = None  # share of input tokens billed as cache writes; None = the default (0)

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
    def write_share(self) -> float:
        """The share of input tokens billed as cache writes (DEFAULT_CACHE_WRITE_SHARE when not stated)."""
        return DEFAULT_CACHE_WRITE_SHARE if self.cache_write_share is None else self.cache_write_share

    @property
    def written_input_tokens(self) -> float:
        """Input tokens billed as cache writes (an explicit input; see the module docstring)."""
        return self.input_tokens * self.write_share

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
    return tier_usd_prices(price, tier, usd_per_cny)


def tier_usd_prices(price: PriceEntry, tier: Any, usd_per_cny: float | None) -> UsdPrices:
    """One tier of a price-book entry in USD (CNY at `usd_per_cny`), each price within its bound."""

    def conv(v: float | None, what: str) -> float | None:
        if v is None:
            return None
        usd = convert_to_usd(v, price.currency, usd_per_cny, what=f"price {what}")
        bounds.check("price_usd_per_m", usd, flag=f"price {what} (in USD per M)")
        return usd

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


# --- per-request pricing -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RequestTokens:
    """Token counts of a set of requests, one entry each: `input`, `output` and `cached` (prompt tokens served
    from the prefix cache), as float arrays of one length. Priced request by request (each at its own tier).

    Made from a point's measured per-request records (`from_frame`) or from a stated length distribution
    (`lognormal`). `source` says which, for the output.
    """

    input: np.ndarray
    output: np.ndarray
    cached: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.input)
        if n == 0 or len(self.output) != n or len(self.cached) != n:
            raise UserInputError("requests: need one input, output and cached count per request (got none)")
        if not (np.all(np.isfinite(self.input)) and np.all(self.input >= 0) and np.all(np.isfinite(self.output))
                and np.all(self.output > 0) and np.all(self.cached >= 0) and np.all(self.cached <= self.input + 1e-9)):
            raise UserInputError("requests: token counts must be finite, output > 0 and 0 <= cached <= input")

    def __len__(self) -> int:
        return len(self.input)

    @property
    def mix(self) -> TrafficMix:
        """The mean request (what the cost side uses: GPU time scales with total output tokens)."""
        inp = float(self.input.mean())
        share = float(self.cached.sum() / self.input.sum()) if self.input.sum() > 0 else 0.0
        return TrafficMix(inp, float(self.output.mean()), min(1.0, share))

    @classmethod
    def from_frame(cls, df: Any, cached_share: float | None = None,
                   source: str = "measured requests") -> RequestTokens | None:
        """The measured, completed requests of a point's per-request table (bench.sweep.session.requests_frame:
        warm-up and cool-down requests excluded, as in the point's totals). A request whose server did not
        report cached tokens gets `cached_share` of its prompt (0 when None). None when no request qualifies."""
        if df is None or len(df) == 0 or "output_tokens" not in df:
            return None
        d = df
        for col, keep in (("ok", True), ("warmup", False), ("cooldown", False)):
            if col in d:
                d = d[d[col].fillna(not keep).astype(bool) == keep]
        inp_col = "prompt_tokens" if "prompt_tokens" in d else "input_tokens"
        inp = np.asarray(d[inp_col], dtype=float)
        out = np.asarray(d["output_tokens"], dtype=float)
        good = np.isfinite(inp) & np.isfinite(out) & (out > 0)
        if not good.any():
            return None
        share = 0.0 if cached_share is None else cached_share
        if "cached_input_tokens" in d:
            rep = np.asarray(d["cached_input_tokens"], dtype=float)
            cached = np.where(np.isfinite(rep), rep, inp * share)
        else:
            cached = inp * share
        return cls(inp[good], out[good], np.minimum(cached[good], inp[good]), source)

    @classmethod
    def lognormal(cls, mix: TrafficMix, input_sigma: float = 0.0, output_sigma: float = 0.0,
                  n: int = 64) -> RequestTokens:
        """A stated length distribution: input and output lengths independent lognormals with the mix's means
        (median = mean x exp(-sigma^2 / 2)) and spreads `input_sigma`, `output_sigma`; the mix's cached share on
        every request. Deterministic: `n` quantiles of each side (at (i + 0.5) / n), every pair one request,
        rescaled so the sample means equal the stated means exactly."""
        from statistics import NormalDist

        bounds.check("length_sigma", input_sigma, flag="input length sigma")
        bounds.check("length_sigma", output_sigma, flag="output length sigma")
        z = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])

        def side(mean: float, sigma: float) -> np.ndarray:
            if sigma == 0 or mean == 0:
                return np.full(n, float(mean))
            x = np.exp(sigma * z)
            return x * (mean / x.mean())

        inp, out = np.meshgrid(side(mix.input_tokens, input_sigma), side(mix.output_tokens, output_sigma))
        inp, out = inp.ravel(), out.ravel()
        return cls(inp, out, inp * mix.cached_share,
                   f"lognormal lengths (input sigma {input_sigma:g}, output sigma {output_sigma:g}; "
                   f"means {mix.input_tokens:g} / {mix.output_tokens:g})")


def revenue_usd_per_request_each(price: PriceLike, reqs: RequestTokens, usd_per_cny: float | None,
                                 write_share: float = DEFAULT_CACHE_WRITE_SHARE) -> np.ndarray:
    """Revenue of every request at its own tier (USD): the revenue formula of `revenue_usd_per_request`,
    with `write_share` of each prompt billed as cache writes (capped at its uncached part)."""
    p_in, p_out, p_cached, p_write = (np.empty(len(reqs)) for _ in range(4))
    tiers: Sequence[Any] = (price.all_tiers() if isinstance(price, PriceEntry) else [None])
    left = np.ones(len(reqs), dtype=bool)
    for t in tiers:
        if t is None:  # plain USD prices: one "tier" for all
            fits = left.copy()
            up = price  # type: ignore[assignment]
        else:
            fits = left & (True if t.max_input_tokens is None else reqs.input <= t.max_input_tokens) & (
                True if t.max_output_tokens is None else reqs.output <= t.max_output_tokens)
            if not fits.any():
                continue
            up = tier_usd_prices(price, t, usd_per_cny)
        p_in[fits], p_out[fits] = up.input_usd_per_m, up.output_usd_per_m
        p_cached[fits], p_write[fits] = up.cached_or_input_usd_per_m, up.cache_write_or_input_usd_per_m
        left &= ~fits
    if left.any():
        top = max(float(reqs.input[left].max()), 0.0)
        price.prices_for(top, float(reqs.output[left].max()))  # raises the one-line "above the longest tier"
        raise UserInputError(f"requests: {int(left.sum())} request(s) fit no price tier of this entry")
    uncached = reqs.input - reqs.cached
    written = np.minimum(reqs.input * write_share, uncached)
    rev = ((uncached - written) * p_in + written * p_write + reqs.cached * p_cached + reqs.output * p_out)
    return rev / TOKENS_PER_M


def mean_finite(values: np.ndarray) -> float:
    v = float(np.mean(values))
    if not math.isfinite(v):
        raise UserInputError("requests: revenue is not a finite number; check the token counts and prices")
    return v
