"""Sane bounds for every physical input of the money commands: one table, each bound with its reason.

Why a module of its own: a number can be finite and positive and still mean nothing (1e308 output tok/s
prices a token at $0.00 and reports a 100% margin; a GPU-hour of 1e-320 dollars; 1e300 tokens a day
sizes a 300-digit fleet). Each input a user or a config file gives is checked here against a range wide
enough for any real deployment and narrow enough to catch a unit slip (per node instead of per GPU, per
thousand tokens instead of per million, CNY per USD instead of USD per CNY). `cost`, `margin`, `plan`
(through bench.econ.fleet and bench.econ.queries), `report` and the price book (when an entry is used)
all check against this one table; a value outside is one line naming the field and the allowed range
(bench.errors.UserInputError -> exit 2).

Derived quantities are not bounded here (a break-even utilization of 3.2 is an answer, not an input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import UserInputError


@dataclass(frozen=True)
class Bound:
    """Allowed range [lo, hi] (an end is open when its flag says so) and why."""

    lo: float
    hi: float
    reason: str
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def interval(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        lo_ok = v > self.lo if self.lo_open else v >= self.lo
        hi_ok = v < self.hi if self.hi_open else v <= self.hi
        return lo_ok and hi_ok and (not self.integer or float(v).is_integer())


# name -> bound. Names are the Python field names; flags map onto them (--output-tok-s-per-gpu ->
# output_tok_s_per_gpu). Keep one entry per physical quantity.
BOUNDS: dict[str, Bound] = {
    "output_tok_s_per_gpu": Bound(
        1e-3, 1e6, "output tok/s per GPU: a tiny model on one CPU core makes ~1 tok/s, the fastest published "
        "GPU runs (InferenceX B200/GB200 peaks) stay below ~50,000; below 1e-3 or above 1e6 is a unit slip"),
    "total_tok_s_per_gpu": Bound(
        1e-3, 1e7, "input + output tok/s per GPU: prefill-heavy published runs reach a few 1e5; 1e7 is 20x that"),
    "input_tokens": Bound(
        0, 1e7, "prompt tokens per request: the longest context windows sold are 1M-10M tokens"),
    "output_tokens": Bound(
        1e-3, 1e6, "generated tokens per request: max output lengths sold are <= 128K; 1e6 leaves 8x room"),
    "usd_per_gpu_hour": Bound(
        1e-3, 1e3, "$/GPU-hour: public rates run $0.1 (old GPUs, spot) to ~$15 (on-demand B200); "
        "$1000 is a whole rack-hour, so larger is a per-node or per-month figure"),
    "utilization": Bound(
        1e-3, 1, "fleet utilization: a share of hours, (0, 1]; below 0.1% the fleet is idle and cost x 1/U "
        "exceeds 1000x the measured one"),
    "usd_per_cny": Bound(
        0.05, 1.0, "USD per CNY: the yuan has traded between 0.11 and 0.17 USD since 1994; outside "
        "[0.05, 1] is most likely the inverse rate (~7.1 CNY per USD)"),
    "price_usd_per_m": Bound(
        0, 1000, "a list price in USD per million tokens: the dearest API price seen (o1-pro output) is $600/M; "
        "above 1000 is a per-thousand or per-token figure"),
    "cached_share": Bound(0, 1, "a share of prompt tokens"),
    "cache_write_share": Bound(0, 1, "a share of prompt tokens"),
    "target_margin": Bound(0, 1, "a gross margin target: 0 = break even, below 1 (100% is free compute)",
                           hi_open=True),
    "price_decline": Bound(0, 1, "a yearly list-price cut: 0.8 = prices fall 80% a year; 1 = free",
                           hi_open=True),
    "hw_decline": Bound(0, 1, "a yearly $/GPU-hour cut", hi_open=True),
    "prefill_fraction": Bound(0, 1, "the share of a request's GPU time spent in prefill", hi_open=True),
    "years": Bound(0, 30, "years of price decline: a GPU is written off in 3-6 years; 30 is a generation",
                   integer=True),
    "subscription_fee": Bound(
        1e-2, 1e6, "a monthly fee: coding plans sell at $3-200 a month; $1M a month is an enterprise contract"),
    "requests_per_month": Bound(
        0, 1e9, "requests a subscriber sends a month: 1e9 is ~400 a second, every second"),
    "requests_sigma": Bound(
        0, 5, "lognormal spread of requests per month: sigma 3 already puts p99 at ~1000x the median; above 5 "
        "the tail draws leave the range of a float"),
    "length_sigma": Bound(
        0, 3, "lognormal spread of request lengths: sigma 3 puts p99 at ~1000x the median length"),
    "tokens_per_day": Bound(
        1, 1e15, "input + output tokens a day: the largest API (OpenAI, ~8.6e12/day) is ~100x below 1e15"),
    "peak_to_average": Bound(1, 100, "peak / average traffic: diurnal API traffic peaks at ~2-3x"),
    "joules_per_token": Bound(
        1e-6, 1e4, "energy per token: GPU serving spends ~0.01-10 J per output token"),
    "usd_per_kwh": Bound(
        0, 2, "electricity price: industrial rates are $0.03-0.30/kWh, the dearest retail rates < $1"),
    "pue": Bound(
        1, 3, "power usage effectiveness: the Uptime Institute survey average is ~1.56 (2024); hyperscale sites "
        "run 1.1-1.2; above 3 no data center reports"),
}


def bound(name: str) -> Bound:
    return BOUNDS[name]


def check(name: str, value: float | None, flag: str | None = None) -> float | None:
    """`value` when it lies in the bound of `name` (None passes through: not given), else one UserInputError
    line naming the field (or `flag`) and the allowed range with its reason."""
    if value is None:
        return None
    b = BOUNDS[name]
    v = float(value)
    if not b.contains(v):
        what = flag or name
        kind = "a whole number in " if b.integer else ""
        raise UserInputError(f"{what}: must be {kind or 'in '}{b.interval()} (got {value:g}); {b.reason}")
    return v


def check_all(**values: float | None) -> None:
    """`check` each keyword (its name is the bound's name); lists are checked item by item."""
    for name, v in values.items():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            check(name, x, flag="--" + name.replace("_", "-"))


def table_rows() -> list[dict[str, str]]:
    """The bounds as rows (field, allowed, reason): for --help texts, docs and tests."""
    return [{"field": k, "allowed": b.interval(), "reason": b.reason} for k, b in BOUNDS.items()]
