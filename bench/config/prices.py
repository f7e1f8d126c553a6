"""The API price book (configs/prices.yaml): `<model>@<provider>` -> dated, sourced token prices."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bench.config.base import StrictModel, load_config
from bench.config.hardware import DATE_PATTERN
from bench.errors import UserInputError


class TokenPrices(StrictModel):
    """Per-million-token prices (in the entry's currency) for requests up to `max_input_tokens`."""

    max_input_tokens: int | None = Field(None, gt=0, description="None = no upper bound")
    input_per_m: float = Field(..., ge=0)
    output_per_m: float = Field(..., ge=0)
    cached_input_per_m: float | None = Field(None, ge=0, description="None = cache hits billed as input")
    cache_write_per_m: float | None = Field(None, ge=0)


class PriceEntry(StrictModel):
    """One model at one provider: flat prices, or `tiers` by request input length (not both).

    Tiered billing (e.g. Aliyun <=32K / 32-96K input) prices the whole request at the tier its
    input length falls in. A request longer than the last bounded tier is an error, not a guess.
    """

    currency: Literal["USD", "CNY"]
    as_of: str = Field(..., pattern=DATE_PATTERN)
    source: str
    note: str = ""
    input_per_m: float | None = Field(None, ge=0)
    output_per_m: float | None = Field(None, ge=0)
    cached_input_per_m: float | None = Field(None, ge=0)
    cache_write_per_m: float | None = Field(None, ge=0)
    tiers: tuple[TokenPrices, ...] = ()

    @model_validator(mode="after")
    def _flat_or_tiers(self) -> PriceEntry:
        flat = self.input_per_m is not None or self.output_per_m is not None
        if self.tiers and flat:
            raise ValueError("give either flat prices (input_per_m, output_per_m, ...) or tiers, not both")
        if not self.tiers and (self.input_per_m is None or self.output_per_m is None):
            raise ValueError("input_per_m and output_per_m are required (or give tiers)")
        bounds = [t.max_input_tokens for t in self.tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may have max_input_tokens: null")
        finite = [b for b in bounds if b is not None]
        if finite != sorted(set(finite)):
            raise ValueError("tiers must be in increasing order of max_input_tokens")
        return self

    def all_tiers(self) -> tuple[TokenPrices, ...]:
        if self.tiers:
            return self.tiers
        return (TokenPrices(
            input_per_m=self.input_per_m, output_per_m=self.output_per_m,  # type: ignore[arg-type]
            cached_input_per_m=self.cached_input_per_m, cache_write_per_m=self.cache_write_per_m,
        ),)

    def prices_for(self, input_tokens: float) -> TokenPrices:
        """The price tier that applies to a request with `input_tokens` prompt tokens."""
        for t in self.all_tiers():
            if t.max_input_tokens is None or input_tokens <= t.max_input_tokens:
                return t
        top = self.all_tiers()[-1].max_input_tokens
        raise UserInputError(
            f"input_tokens: {input_tokens:g} is above the longest priced tier (max_input_tokens {top}) "
            "of this price entry; allowed: input_tokens <= " + str(top)
        )


PRICE_KEY_PATTERN = r"^[a-z0-9][a-z0-9.\-]*@[a-z0-9][a-z0-9.\-]*$"


class PriceBook(StrictModel):
    """configs/prices.yaml: `<model>@<provider>` -> PriceEntry."""

    prices: dict[str, PriceEntry]

    @field_validator("prices")
    @classmethod
    def _keys(cls, v: dict[str, PriceEntry]) -> dict[str, PriceEntry]:
        bad = [k for k in v if not re.match(PRICE_KEY_PATTERN, k)]
        if bad:
            raise ValueError(f"price keys must look like <model>@<provider> in lower case (got {bad})")
        return v

    def models(self) -> list[str]:
        return sorted({k.split("@")[0] for k in self.prices})

    def providers(self, model: str) -> list[str]:
        return sorted(k.split("@")[1] for k in self.prices if k.split("@")[0] == model)

    def get(self, key: str) -> PriceEntry:
        """Look up `<model>@<provider>`; an unknown model or provider names the allowed ones."""
        if key in self.prices:
            return self.prices[key]
        if "@" not in key:
            raise UserInputError(
                f"price: {key!r} must be <model>@<provider>; allowed: {', '.join(self.prices)}"
            )
        model, provider = key.split("@", 1)
        if model not in self.models():
            raise UserInputError(f"price: unknown model {model!r}; allowed: {', '.join(self.models())}")
        raise UserInputError(
            f"price: unknown provider {provider!r} for {model}; allowed: {', '.join(self.providers(model))}"
        )


def load_price_book(path: str | Path | None = None) -> PriceBook:
    """configs/prices.yaml with the user's prices.yaml (--config-dir) layered over it, entries by key;
    or the one file `path`. Problems become a one-line UserInputError."""
    return load_config("prices.yaml", PriceBook, keyed=("prices",), path=path,
                       shape="a price book must be a YAML mapping with the key prices")
