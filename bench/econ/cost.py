"""GPU-hours -> dollars per million tokens, per request, and per unit of energy.

One formula, used everywhere (also the one SemiAnalysis' InferenceX dashboard uses):
    usd_per_m_tokens = usd_per_gpu_hour / (tok_s_per_gpu * 3600 / 1e6)
A benchmark measures a fully loaded server; at fleet utilization U the same GPU-hour produces
U times as many tokens, so cost per token scales by 1/U.

The GPU cost rate comes from a rental tier or from the owned-hardware TCO model below; both are
configured in configs/hardware.yaml. This module never reads results files: callers pass numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from bench.config.hardware import TCO_TIER, HardwareCatalog, TcoSpec
from bench.errors import UserInputError
from bench.units import HOURS_PER_MONTH, HOURS_PER_YEAR, JOULES_PER_KWH, SECONDS_PER_HOUR, TOKENS_PER_M  # noqa: F401

# Fleet utilization: the ONE place the defaults are set (every money line prints "at U = ...").
# A benchmark measures a server kept busy; a fleet is not. Assumptions (ours, stated, not measured):
# - peak-to-average 2.0: API traffic follows the working day (weekday peaks ~8am-2pm, nights 30-40%
#   faster on shared fleets, tianpan.co "Diurnal Latency", 2026-05-09), so the busiest hour carries
#   about twice the daily average;
# - max utilization at peak 0.8: capacity is sized so the peak hour runs at no more than 80% of the
#   measured SLO-feasible throughput, leaving queueing headroom for bursts inside the hour;
# - hence average utilization U = 0.8 / 2.0 = 0.4 of the measured throughput, over all hours.
# U = 1 (a fleet busy every hour at its benchmarked throughput) is a best case; ask for it explicitly.
DEFAULT_PEAK_TO_AVERAGE = 2.0
DEFAULT_MAX_UTILIZATION_AT_PEAK = 0.8
DEFAULT_UTILIZATION = DEFAULT_MAX_UTILIZATION_AT_PEAK / DEFAULT_PEAK_TO_AVERAGE

# Power usage effectiveness when a TCO entry does not state one: facility power / IT power. The TCO
# model's kw_all_in is chip plus its share of host and network BEFORE cooling and power conversion, so
# energy = kw_all_in x PUE x $/kWh. 1.56 = the average PUE the Uptime Institute Global Data Center Survey
# reported for 2024 (flat at ~1.55-1.59 since 2019). Entries whose kW figure is already facility-level
# (SemiAnalysis all-in constants) state pue 1.0 in configs/hardware.yaml.
DEFAULT_PUE = 1.56
DEFAULT_PUE_SOURCE = "Uptime Institute Global Data Center Survey 2024 (average PUE 1.56)"

SplitMethod = Literal["output", "price-ratio", "time"]
SPLIT_METHODS: tuple[str, ...] = ("output", "price-ratio", "time")


def require_positive(name: str, value: float) -> float:
    """`value` must be a finite number > 0, else a UserInputError naming `name`."""
    if value is None or not math.isfinite(value) or value <= 0:
        raise UserInputError(f"{name} must be > 0 (got {value})")
    return float(value)


def require_non_negative(name: str, value: float) -> float:
    if value is None or not math.isfinite(value) or value < 0:
        raise UserInputError(f"{name} must be >= 0 (got {value})")
    return float(value)


def require_utilization(value: float, name: str = "utilization") -> float:
    """Fleet utilization is a fraction of wall time the GPUs do useful work: (0, 1]."""
    if value is None or not math.isfinite(value) or not 0 < value <= 1:
        raise UserInputError(f"{name} must be in (0, 1] (got {value})")
    return float(value)


def require_fraction(name: str, value: float, upper_open: bool = False) -> float:
    """A share in [0, 1] (or [0, 1) when `upper_open`)."""
    hi_ok = value < 1 if upper_open else value <= 1
    if value is None or not math.isfinite(value) or value < 0 or not hi_ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise UserInputError(f"{name} must be in {interval} (got {value})")
    return float(value)


def usd_per_m_tokens(tok_s_per_gpu: float, usd_per_gpu_hour: float, utilization: float = 1.0) -> float:
    """Dollars per million of the tokens `tok_s_per_gpu` counts (output, or input + output: the caller
    names the result for the tokens it passed) for a GPU busy `utilization` of the time."""
    require_positive("tok_s_per_gpu", tok_s_per_gpu)
    require_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    require_utilization(utilization)
    m_tokens_per_gpu_hour = tok_s_per_gpu * utilization * SECONDS_PER_HOUR / TOKENS_PER_M
    return usd_per_gpu_hour / m_tokens_per_gpu_hour


def usd_per_request(gpu_seconds: float, usd_per_gpu_hour: float, utilization: float = 1.0) -> float:
    """Cost of a request that used `gpu_seconds` of GPU time, at fleet utilization U (cost x 1/U)."""
    require_positive("gpu_seconds", gpu_seconds)
    require_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    require_utilization(utilization)
    return gpu_seconds * usd_per_gpu_hour / SECONDS_PER_HOUR / utilization


@dataclass(frozen=True)
class TcoBreakdown:
    """Owned-hardware cost per GPU-hour, by component."""

    capital_usd_per_gpu_hour: float
    energy_usd_per_gpu_hour: float
    hosting_usd_per_gpu_hour: float

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.capital_usd_per_gpu_hour + self.energy_usd_per_gpu_hour + self.hosting_usd_per_gpu_hour

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "usd_per_gpu_hour": self.usd_per_gpu_hour}


def tco_usd_per_gpu_hour(
    capex_usd: float,
    amortization_years: float,
    residual_fraction: float,
    kw_all_in: float,
    pue: float,
    usd_per_kwh: float,
    hosting_usd_per_gpu_hour: float,
    cost_of_capital_rate: float = 0.0,
) -> TcoBreakdown:
    """Effective $/GPU-hour of owned hardware, running all hours of the year.

    capital = capex less the residual value, spread over the years (straight line when the cost of
    capital r is 0; otherwise the annuity that repays capex minus the discounted residual:
    (capex - residual / (1+r)^n) * r / (1 - (1+r)^-n) per year).
    energy = kw_all_in x pue x usd_per_kwh per hour; hosting = a flat $/GPU-hour (space, network, ops).
    Fleet utilization is applied later, to the tokens, not here.
    """
    require_positive("capex_usd", capex_usd)
    n = require_positive("amortization_years", amortization_years)
    require_fraction("residual_fraction", residual_fraction, upper_open=True)
    require_positive("kw_all_in", kw_all_in)
    if not math.isfinite(pue) or pue < 1:
        raise UserInputError(f"pue must be >= 1 (got {pue})")
    require_non_negative("usd_per_kwh", usd_per_kwh)
    require_non_negative("hosting_usd_per_gpu_hour", hosting_usd_per_gpu_hour)
    r = require_fraction("cost_of_capital_rate", cost_of_capital_rate, upper_open=True)
    residual_usd = capex_usd * residual_fraction
    if r == 0:
        capital_per_year = (capex_usd - residual_usd) / n
    else:
        capital_per_year = (capex_usd - residual_usd / (1 + r) ** n) * r / (1 - (1 + r) ** -n)
    return TcoBreakdown(
        capital_usd_per_gpu_hour=capital_per_year / HOURS_PER_YEAR,
        energy_usd_per_gpu_hour=kw_all_in * pue * usd_per_kwh,
        hosting_usd_per_gpu_hour=hosting_usd_per_gpu_hour,
    )



def tco_pue(tco: TcoSpec, pue: float | None = None) -> tuple[float, str]:
    """The PUE a TCO figure uses and where it comes from: `pue` (given), the entry's own, else DEFAULT_PUE."""
    if pue is not None:
        return pue, "given (--pue)"
    if "pue" in tco.model_fields_set:
        return float(tco.pue), "configs/hardware.yaml tco entry"
    return DEFAULT_PUE, f"default: {DEFAULT_PUE_SOURCE}"


def tco_breakdown(tco: TcoSpec, usd_per_cny: float | None = None, pue: float | None = None) -> TcoBreakdown:
    """The TCO formula applied to a configs/hardware.yaml `tco:` entry (CNY inputs at `usd_per_cny`;
    PUE from `tco_pue`)."""
    inputs = tco.usd_inputs(usd_per_cny)
    inputs["pue"] = tco_pue(tco, pue)[0]
    return tco_usd_per_gpu_hour(**inputs)


def resolve_usd_per_gpu_hour(gpu: str, tier: str, catalog: HardwareCatalog,
                             usd_per_cny: float | None = None, pue: float | None = None) -> float:
    """$/GPU-hour for `gpu` at a named rental tier, or at 'tco' for owned hardware (the TCO model).

    `usd_per_cny` overrides the catalog's exchange rate, `pue` the TCO entry's PUE. The caller passes the
    catalog (this layer reads no files): `resolve_usd_per_gpu_hour(gpu, tier, load_hardware())`.
    """
    tier = catalog.canonical_tier(gpu, tier)
    spec = catalog.gpu(gpu)
    rate = usd_per_cny if usd_per_cny is not None else catalog.exchange_rates.usd_per_cny
    if tier == TCO_TIER and spec.tco is not None:
        return tco_breakdown(spec.tco, rate, pue).usd_per_gpu_hour
    return spec.tiers[tier].usd_per_gpu_hour


def joules_per_token(watts_per_gpu: float, tok_s_per_gpu: float) -> float:
    """Energy per token from measured average power and throughput per GPU (W / (tok/s) = J/tok)."""
    return require_positive("watts_per_gpu", watts_per_gpu) / require_positive("tok_s_per_gpu", tok_s_per_gpu)


def energy_usd_per_m_tokens(joules_per_tok: float, usd_per_kwh: float, pue: float = 1.0) -> float:
    """Electricity cost per million tokens: J/token x 1e6 / 3.6e6 J/kWh x $/kWh x PUE.

    This is the energy part only (already inside a TCO $/GPU-hour; shown separately because
    quantization and batching move it and it is what a power meter can check).
    """
    require_positive("joules_per_token", joules_per_tok)
    require_non_negative("usd_per_kwh", usd_per_kwh)
    if not math.isfinite(pue) or pue < 1:
        raise UserInputError(f"pue must be >= 1 (got {pue})")
    return joules_per_tok * TOKENS_PER_M / JOULES_PER_KWH * usd_per_kwh * pue


@dataclass(frozen=True)
class CostSplit:
    """A request's cost attributed to its input and output tokens, with the method that did it."""

    method: str
    input_usd_per_m: float
    output_usd_per_m: float
    input_share: float  # fraction of the request cost attributed to input tokens

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def split_cost(
    usd_per_req: float,
    input_tokens: float,
    output_tokens: float,
    method: str = "output",
    *,
    input_to_output_price_ratio: float | None = None,
    prefill_s: float | None = None,
    decode_s: float | None = None,
) -> CostSplit:
    """Split one request's cost between input and output tokens; every method conserves the total.

    Margin never needs a split (it compares the cost and revenue of the same requests); reports show
    one to say what an input or an output token "costs", and must name the method:
    - "output": all cost on output tokens (input priced at 0) - the InferenceX convention.
    - "price-ratio": c_in / c_out equals the list-price ratio p_in / p_out, so
      c_out = cost / (input x ratio + output), c_in = ratio x c_out.
    - "time": the share spent in prefill (prefill_s, e.g. TTFT) over prefill + decode time
      (e.g. E2EL - TTFT) goes to input tokens, the rest to output tokens.
    """
    require_positive("usd_per_request", usd_per_req)
    require_non_negative("input_tokens", input_tokens)
    require_positive("output_tokens", output_tokens)
    if method == "output" or input_tokens == 0:
        share = 0.0
    elif method == "price-ratio":
        if input_to_output_price_ratio is None:
            raise UserInputError("input_to_output_price_ratio is required for split method 'price-ratio'")
        ratio = require_non_negative("input_to_output_price_ratio", input_to_output_price_ratio)
        share = input_tokens * ratio / (input_tokens * ratio + output_tokens)
    elif method == "time":
        if prefill_s is None or decode_s is None:
            raise UserInputError("prefill_s and decode_s are required for split method 'time'")
        p = require_non_negative("prefill_s", prefill_s)
        d = require_non_negative("decode_s", decode_s)
        if p + d <= 0:
            raise UserInputError("prefill_s + decode_s must be > 0 for split method 'time'")
        share = p / (p + d)
    else:
        raise UserInputError(f"split method must be one of {', '.join(SPLIT_METHODS)} (got {method!r})")
    in_usd = usd_per_req * share
    out_usd = usd_per_req - in_usd
    return CostSplit(
        method=method,
        input_usd_per_m=in_usd / input_tokens * TOKENS_PER_M if input_tokens else 0.0,
        output_usd_per_m=out_usd / output_tokens * TOKENS_PER_M,
        input_share=share,
    )
