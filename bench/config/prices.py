"""The API price book (configs/prices.yaml): `<model>@<provider>` -> dated, sourced token prices.

Two dates per entry, because a CFO asks both "how old is this price?" and "when did we look?":
`source_date` is the date the source itself shows (or "undated"), `as_of` the date it was recorded here.
Tiers can depend on input AND output length (bigmodel.cn bills GLM-4.7 by both), so `prices_for` takes
both token counts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bench.config.base import StrictModel, load_config
from bench.config.hardware import DATE_PATTERN, SOURCE_DATE_PATTERN
from bench.errors import UserInputError


class TokenPrices(StrictModel):
    """Per-million-token prices (in the entry's currency) for requests with input <= `max_input_tokens`
    and output <= `max_output_tokens` (both inclusive; None = no upper bound)."""

    max_input_tokens: int | None = Field(None, gt=0, description="None = no upper bound")
    max_output_tokens: int | None = Field(None, gt=0, description="None = no upper bound")
    input_per_m: float = Field(..., ge=0)
    output_per_m: float = Field(..., ge=0)
    cached_input_per_m: float | None = Field(None, ge=0, description="None = cache hits billed as input")
    cache_write_per_m: float | None = Field(None, ge=0)


class PriceEntry(StrictModel):
    """One model at one provider: flat prices, or `tiers` by request input (and output) length.

    Tiered billing (e.g. Aliyun <=32K / 32-96K input; bigmodel.cn GLM-4.7 input <32K with output
    <200 / >=200 tokens) prices the whole request at the first tier whose bounds it fits. Tiers are
    ordered by max_input_tokens, and within one input bound by max_output_tokens, the last of each
    input group unbounded in output. A request longer than the last bounded tier is an error.
    """

    currency: Literal["USD", "CNY"]
    as_of: str = Field(..., pattern=DATE_PATTERN, description="date recorded here")
    source_date: str | None = Field(None, pattern=SOURCE_DATE_PATTERN,
                                    description="date the source shows, or 'undated'")
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
        groups: dict[int | None, list[int | None]] = {}
        for t in self.tiers:
            groups.setdefault(t.max_input_tokens, []).append(t.max_output_tokens)
        bounds = list(groups)
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may have max_input_tokens: null")
        finite = [b for b in bounds if b is not None]
        if finite != sorted(finite) or [t.max_input_tokens for t in self.tiers] != [
            b for b in bounds for _ in groups[b]
        ]:
            raise ValueError("tiers must be in increasing order of max_input_tokens")
        for b, outs in groups.items():
            fin = [o for o in outs if o is not None]
            if outs[-1] is not None or len(fin) != len(outs) - 1 or fin != sorted(set(fin)):
                raise ValueError(f"tiers with max_input_tokens {b}: max_output_tokens must increase "
                                 "and the last must be null (every output length priced)")
        return self

    def all_tiers(self) -> tuple[TokenPrices, ...]:
        if self.tiers:
            return self.tiers
        return (TokenPrices(
            input_per_m=self.input_per_m, output_per_m=self.output_per_m,  # type: ignore[arg-type]
            cached_input_per_m=self.cached_input_per_m, cache_write_per_m=self.cache_write_per_m,
        ),)

    def prices_for(self, input_tokens: float, output_tokens: float = 0.0) -> TokenPrices:
        """The price tier that applies to a request of `input_tokens` prompt and `output_tokens`
        generated tokens (the first tier whose bounds both fit)."""
        for t in self.all_tiers():
            if (t.max_input_tokens is None or input_tokens <= t.max_input_tokens) and (
                    t.max_output_tokens is None or output_tokens <= t.max_output_tokens):
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
