"""bench.econ.margin: golden cases worked by hand (arithmetic in the comments) and property tests."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench.config.prices import PriceEntry
from bench.config.slo import parse_slo
from bench.econ import fleet, scenarios
from bench.econ import margin as mg
from bench.errors import UserInputError
from tests.unit.econ.golden_points import golden_points

# GLM-4.5-Air at Z.ai: $0.20 in, $0.03 cached, $1.10 out per M tokens (shared/reference/prices.md)
AIR_ZAI = PriceEntry(
    currency="USD",
    as_of="2026-11-24",
    source="test",
    input_per_m=0.20,
    cached_input_per_m=0.03,
    output_per_m=1.10,
)
MIX = mg.TrafficMix(2000, 500)
# revenue/request = 2000 x 0.20e-6 + 500 x 1.10e-6 = 0.00040 + 0.00055 = $0.00095
REV = 0.00095
# 500 output tokens at 1000 tok/s/GPU = 0.5 GPU-s; x $1.74/h / 3600 = $0.000241666...
COST_U1 = 0.5 * 1.74 / 3600


def gold(utilization: float = 1.0) -> mg.Offer:
    """The golden case: MIX at AIR_ZAI on a GPU doing 1000 output tok/s at $1.74/GPU-hour."""
    return mg.Offer(MIX, AIR_ZAI, 1000, 1.74, utilization)


def test_api_margin_glm45_air_golden():
    r = mg.api_margin(gold())
    assert r.revenue_usd_per_request == pytest.approx(REV)
    assert r.cost_usd_per_request == pytest.approx(COST_U1)
    # 1 - 0.000241667 / 0.00095 = 1 - 0.254386 = 0.745614
    assert r.gross_margin == pytest.approx(0.7456140351, rel=1e-9)
    # (0.00095 - 0.000241667) / 2500 tokens x 1e6 = $0.283333 per M tokens
    assert r.margin_usd_per_m_tokens == pytest.approx(0.2833333333, rel=1e-9)
    # all cost on output: 1.74 / 3.6 = $0.48333 per M output tokens
    assert r.cost_usd_per_m_output_tokens == pytest.approx(0.4833333333, rel=1e-9)


def test_api_margin_at_utilization():
    # U = 0.6: cost = 0.000241667 / 0.6 = 0.000402778; margin = 1 - 0.000402778/0.00095 = 0.576023
    r = mg.api_margin(gold(0.6))
    assert r.gross_margin == pytest.approx(1 - COST_U1 / 0.6 / REV)
    assert r.gross_margin == pytest.approx(0.5760233918, rel=1e-9)


def test_cached_share_changes_revenue():
    # half of 2000 input tokens cached: 1000 x 0.20 + 1000 x 0.03 + 500 x 1.10 = 780 -> $0.00078
    mix = mg.TrafficMix(2000, 500, cached_share=0.5)
    assert mg.api_margin(mg.Offer(mix, AIR_ZAI, 1000, 1.74)).revenue_usd_per_request == pytest.approx(0.00078)


def test_no_cached_price_bills_cache_hits_as_input():
    entry = PriceEntry(currency="USD", as_of="2026", source="t", input_per_m=1.0, output_per_m=2.0)
    # 1000 input tokens (all cached, billed as input) x $1 + 100 x $2 = 1200 -> $0.0012
    mix = mg.TrafficMix(1000, 100, cached_share=1.0)
    assert mg.api_margin(mg.Offer(mix, entry, 100, 1.0)).revenue_usd_per_request == pytest.approx(0.0012)


def test_break_even_utilization_golden():
    # U* = cost(U=1) / revenue = 0.000241667 / 0.00095 = 0.254386
    assert mg.break_even_utilization(gold()) == pytest.approx(0.2543859649, rel=1e-9)
    # for a 50% margin: 0.254386 / (1 - 0.5) = 0.508772
    assert mg.break_even_utilization(gold(), 0.5) == pytest.approx(0.5087719298, rel=1e-9)


def test_break_even_price_golden():
    # U = 0.6: cost 0.000402778 / revenue 0.00095 = 0.423977 of list; output $1.10 x 0.423977 = $0.466374
    b = mg.break_even_price(gold(0.6))
    assert b.scale == pytest.approx(0.4239766082, rel=1e-9)
    assert b.output_usd_per_m == pytest.approx(0.4663742690, rel=1e-9)
    assert b.input_usd_per_m == pytest.approx(0.20 * 0.4239766082, rel=1e-9)


def test_break_even_tok_s_golden():
    # T* = 500 x 1.74 / (3600 x 1.0 x 0.00095) = 870 / 3.42 = 254.386 output tok/s per GPU
    assert mg.break_even_tok_s_per_gpu(gold()) == pytest.approx(254.3859649, rel=1e-9)


def test_cny_price_converts_with_explicit_rate_only():
    aliyun = PriceEntry(
        currency="CNY",
        as_of="2026",
        source="t",
        tiers=({"max_input_tokens": 32000, "input_per_m": 0.8, "output_per_m": 6.0},),
    )
    mix = mg.TrafficMix(1000, 100)
    # (1000 x 0.8 + 100 x 6) CNY/M = 1400e-6 CNY x 0.14 USD/CNY = $0.000196
    r = mg.api_margin(mg.Offer(mix, aliyun, 100, 1.0, usd_per_cny=0.14))
    assert r.revenue_usd_per_request == pytest.approx(0.000196)
    with pytest.raises(UserInputError, match="usd_per_cny"):
        mg.api_margin(mg.Offer(mix, aliyun, 100, 1.0))
    with pytest.raises(UserInputError, match="max_input_tokens 32000"):
        mg.api_margin(mg.Offer(mg.TrafficMix(40000, 100), aliyun, 100, 1.0, usd_per_cny=0.14))


def test_tiers_pick_by_input_length():
    entry = PriceEntry(
        currency="USD",
        as_of="2026",
        source="t",
        tiers=(
            {"max_input_tokens": 1000, "input_per_m": 1.0, "output_per_m": 2.0},
            {"max_input_tokens": None, "input_per_m": 3.0, "output_per_m": 4.0},
        ),
    )
    # 1000 tokens is inside the first tier (inclusive); 1001 falls in the second
    assert mg.usd_prices(entry, 1000).input_usd_per_m == 1.0
    assert mg.usd_prices(entry, 1001).output_usd_per_m == 4.0


def test_subscriber_golden():
    # $10/month, 10,000 requests x $0.000241667 = $2.41667 cost; margin $7.58333 = 75.83%;
    # break-even at 10 / 0.000241667 = 41,379.3 requests a month
    s = fleet.subscriber_margin(10.0, 10000, mg.Offer(MIX, None, 1000, 1.74))  # cost only: no price needed
    assert s["cost_usd_per_month"] == pytest.approx(2.4166666667)
    assert s["gross_margin"] == pytest.approx(0.7583333333)
    assert s["break_even_requests_per_month"] == pytest.approx(41379.3103448, rel=1e-9)


def test_subscription_population_golden():
    # costs: 0, 20k x 0.000241667 = 4.8333, 50k -> 12.0833, 100k -> 24.1667; two of four exceed $10
    # total cost 41.0833 vs fees 40 -> gross margin 1 - 41.0833/40 = -0.0270833; mean margin -0.270833
    r = fleet.subscription_plan(10.0, [0, 20000, 50000, 100000], gold())
    assert r.share_served_at_loss == pytest.approx(0.5)
    assert r.gross_margin == pytest.approx(-0.0270833333, rel=1e-6)
    assert r.mean_margin_usd_per_subscriber == pytest.approx(-0.2708333333, rel=1e-6)


def test_subscription_share_at_loss_matches_lognormal_formula():
    # P(R > R*) for lognormal R with median 20,000 and sigma 1: 1 - Phi(ln(R*/20000)), R* = 41,379.3
    samples = fleet.lognormal_samples(20000, 1.0, 200_000, seed=1)
    r = fleet.subscription_plan(10.0, samples, gold())
    z = math.log(41379.3103448 / 20000)
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    assert r.share_served_at_loss == pytest.approx(expected, abs=0.005)


def test_fleet_sizing_golden():
    # 8.64e9 tokens/day / 2000 tokens per request = 4.32e6 requests/day = 50 req/s
    # 50 req/s x 0.5 GPU-s = 25 GPUs busy on average; peak x2 = 50 GPUs; replicas of 8 -> ceil(6.25) = 7
    # 56 GPUs x $1.74 x 730 h = $71,131.20 a month; average utilization 25/56
    mix = mg.TrafficMix(1500, 500)
    p = fleet.fleet_size(8.64e9, mix, 1000, 1.74, peak_to_average=2, gpus_per_replica=8, price=AIR_ZAI)
    assert p.requests_per_day == pytest.approx(4.32e6)
    assert p.gpus_busy_avg == pytest.approx(25.0)
    assert (p.replicas, p.gpus) == (7, 56)
    assert p.monthly_cost_usd == pytest.approx(71131.2)
    assert p.avg_utilization == pytest.approx(25 / 56)
    # revenue: (1500 x 0.20 + 500 x 1.10) e-6 = $0.00085/request x 4.32e6 = $3,672/day x 365/12 = $111,690
    assert p.monthly_revenue_usd == pytest.approx(111690.0)
    assert p.gross_margin == pytest.approx(1 - 71131.2 / 111690.0)


def test_fleet_sizing_exact_multiple_does_not_round_up():
    # 24 busy GPUs exactly (48 req/s x 0.5 GPU-s), no peak factor, replicas of 8 -> exactly 3
    p = fleet.fleet_size(48 * 86400 * 2000, mg.TrafficMix(1500, 500), 1000, 1.0, gpus_per_replica=8)
    assert p.gpus == 24


def test_private_and_shared_deployment_golden():
    # 8 GPUs x $1/h x 8760 h = $70,080 a year; sold for $100,000 -> margin 29.92%
    d = fleet.private_deployment(8, 100_000, 1.0)
    assert d["cost_usd_per_year"] == pytest.approx(70080)
    assert d["gross_margin"] == pytest.approx(0.2992)
    # 16 GPUs -> $140,160; 10 tenants x $20,000 = $200,000 -> 29.92%; break-even ceil(7.008) = 8 tenants
    s = fleet.shared_deployment(16, 1.0, 10, 20_000, output_tok_s_per_gpu=1000, utilization=0.5)
    assert s["gross_margin"] == pytest.approx(0.2992)
    assert s["break_even_tenants"] == 8
    # 16 x 1000 tok/s x 0.5 x 86,400 s / 10 tenants = 69.12 M output tokens per tenant per day
    assert s["output_tokens_per_tenant_per_day"] == pytest.approx(69.12e6)


def test_price_decline_scenarios():
    # prices halve: revenue halves, cost stays -> margin_1 = 1 - 2 x (1 - m0) = 2 m0 - 1
    rows = scenarios.price_decline_scenarios(gold(), years=2, price_decline_per_year=0.5)
    m0 = rows[0]["gross_margin"]
    assert rows[1]["gross_margin"] == pytest.approx(2 * m0 - 1)
    assert rows[2]["price_scale"] == pytest.approx(0.25)
    # hardware cost falling as fast as prices keeps the margin where it was
    rows = scenarios.price_decline_scenarios(gold(), years=1, price_decline_per_year=0.5, hw_cost_decline_per_year=0.5)
    assert rows[1]["gross_margin"] == pytest.approx(m0)


def test_margin_vs_utilization_rows_and_break_even():
    rows = mg.margin_vs_utilization(gold())
    assert [r["utilization"] for r in rows][:3] == [0.05, 0.1, 0.15] and rows[-1]["utilization"] == 1.0
    at_half = next(r for r in rows if r["utilization"] == 0.5)
    # 1 - (0.000241667 / 0.5) / 0.00095 = 0.491228
    assert at_half["gross_margin"] == pytest.approx(0.4912280702, rel=1e-9)
    u_star = mg.break_even_utilization(gold())
    assert mg.api_margin(gold(u_star)).gross_margin == pytest.approx(0.0, abs=1e-12)


def test_sensitivity_rows():
    rows = scenarios.margin_sensitivity(gold(0.5), swing=0.2)
    by = {r["factor"]: r for r in rows}
    assert set(by) == {"utilization", "price", "throughput", "usd_per_gpu_hour", "cached_share"}
    # price x1.2: 1 - (0.000483333 / (1.2 x 0.00095)) = 0.576023
    assert by["price"]["margin_at_high"] == pytest.approx(1 - COST_U1 / 0.5 / (1.2 * REV))
    # a dearer GPU-hour lowers the margin
    assert by["usd_per_gpu_hour"]["margin_at_high"] < by["usd_per_gpu_hour"]["margin_at_low"]
    spans = [r["span"] for r in rows]
    assert spans == sorted(spans, reverse=True)
    # caching with no prefill saving only cuts revenue; with prefill_fraction it also cuts cost
    no_saving = by["cached_share"]["margin_at_high"]
    with_saving = {r["factor"]: r for r in scenarios.margin_sensitivity(gold(0.5), prefill_fraction=0.5)}
    with_saving = with_saving["cached_share"]["margin_at_high"]
    assert no_saving < by["cached_share"]["base_margin"] < with_saving


def test_bad_inputs_name_the_field():
    with pytest.raises(UserInputError, match="utilization"):
        mg.api_margin(gold(1.5))
    with pytest.raises(UserInputError, match="tok_s_per_gpu"):
        mg.api_margin(mg.Offer(MIX, AIR_ZAI, 0, 1.74))
    with pytest.raises(UserInputError, match="usd_per_gpu_hour"):
        mg.api_margin(mg.Offer(MIX, AIR_ZAI, 1000, -1))
    with pytest.raises(UserInputError, match="cached_share"):
        mg.TrafficMix(100, 10, cached_share=1.5)
    with pytest.raises(UserInputError, match="output_tokens"):
        mg.TrafficMix(100, 0)
    with pytest.raises(UserInputError, match="target_margin"):
        mg.break_even_utilization(gold(), target_margin=1.0)
    with pytest.raises(UserInputError, match="prices must be > 0"):
        mg.api_margin(mg.Offer(MIX, mg.UsdPrices(0.0, 0.0), 1000, 1.74))
    with pytest.raises(UserInputError, match="price: needed"):
        mg.api_margin(mg.Offer(MIX, None, 1000, 1.74))


def test_margin_per_point_and_best_under_slo():
    rows = mg.margin_per_point(golden_points(), AIR_ZAI, 1.0)
    assert [r["point_id"] for r in rows] == ["p-low", "p-high"]  # the failed point is skipped
    by = {r["point_id"]: r for r in rows}
    # point mix = 20000/10 in, 5000/10 out = the golden mix; at 1000 tok/s the golden margin
    assert by["p-high"]["gross_margin"] == pytest.approx(0.7456140351, rel=1e-9)
    # at 500 tok/s cost doubles: 1 - 2 x 0.254386 = 0.491228
    assert by["p-low"]["gross_margin"] == pytest.approx(0.4912280702, rel=1e-9)
    assert mg.best_point(rows)["point_id"] == "p-high"
    assert mg.best_point(rows, parse_slo("tpot_ms<=50"))["point_id"] == "p-low"
    assert mg.best_point(rows, parse_slo("ttft_ms<=100")) is None


# --- properties -------------------------------------------------------------------------------

pos = st.floats(min_value=1e-2, max_value=1e5, allow_nan=False, allow_infinity=False)
util = st.floats(min_value=1e-2, max_value=1.0)
mixes = st.builds(
    mg.TrafficMix,
    st.floats(min_value=0, max_value=1e5),
    st.floats(min_value=1, max_value=1e4),
    st.floats(min_value=0, max_value=1),
)


@settings(deadline=None)  # shared CI machine: time is not the property
@given(mix=mixes, tok=pos, rate=pos, u=util, k1=st.floats(0.01, 10), k2=st.floats(0.01, 10))
def test_property_margin_monotone_in_price(mix, tok, rate, u, k1, k2):
    lo, hi = sorted((k1, k2))
    p = mg.usd_prices(AIR_ZAI, mix.input_tokens)
    assert (
        mg.api_margin(mg.Offer(mix, p.scaled(lo), tok, rate, u)).gross_margin
        <= mg.api_margin(mg.Offer(mix, p.scaled(hi), tok, rate, u)).gross_margin + 1e-12
    )


@settings(deadline=None)  # shared CI machine: time is not the property
@given(mix=mixes, t1=pos, t2=pos, rate=pos, u=util)
def test_property_margin_monotone_in_throughput(mix, t1, t2, rate, u):
    lo, hi = sorted((t1, t2))
    assert (
        mg.api_margin(mg.Offer(mix, AIR_ZAI, lo, rate, u)).gross_margin
        <= mg.api_margin(mg.Offer(mix, AIR_ZAI, hi, rate, u)).gross_margin + 1e-12
    )


@settings(deadline=None)  # shared CI machine: time is not the property
@given(mix=mixes, tok=pos, rate=pos, u=util)
def test_property_cost_scales_as_inverse_utilization(mix, tok, rate, u):
    c_u = mg.api_margin(mg.Offer(mix, AIR_ZAI, tok, rate, u)).cost_usd_per_request
    c_1 = mg.api_margin(mg.Offer(mix, AIR_ZAI, tok, rate, 1.0)).cost_usd_per_request
    assert c_u * u == pytest.approx(c_1, rel=1e-12)


@settings(deadline=None)  # shared CI machine: time is not the property
@given(mix=mixes, tok=pos, rate=pos, u=util, m=st.floats(min_value=0, max_value=0.95))
def test_property_break_even_price_gives_target_margin(mix, tok, rate, u, m):
    b = mg.break_even_price(mg.Offer(mix, AIR_ZAI, tok, rate, u), m)
    p = mg.usd_prices(AIR_ZAI, mix.input_tokens).scaled(b.scale)
    assert mg.api_margin(mg.Offer(mix, p, tok, rate, u)).gross_margin == pytest.approx(m, abs=1e-9)


@settings(deadline=None)  # shared CI machine: time is not the property
@given(mix=mixes, tok=pos, q=st.floats(min_value=1e-3, max_value=1.0), m=st.floats(min_value=0, max_value=0.95))
def test_property_break_even_utilization_and_throughput(mix, tok, q, m):
    # pick the GPU rate so that the documented break-even U = out x rate / (3600 x tok x rev x (1 - m)) is q
    rev = mg.revenue_usd_per_request(mix, mg.usd_prices(AIR_ZAI, mix.input_tokens))
    rate = q * rev * (1 - m) * 3600 * tok / mix.output_tokens
    assume(rate > 0)
    u_star = mg.break_even_utilization(mg.Offer(mix, AIR_ZAI, tok, rate), m)
    assert u_star == pytest.approx(q, rel=1e-9)
    at_u_star = mg.Offer(mix, AIR_ZAI, tok, rate, min(u_star, 1.0))
    assert mg.api_margin(at_u_star).gross_margin == pytest.approx(m, abs=1e-9)
    t_star = mg.break_even_tok_s_per_gpu(mg.Offer(mix, AIR_ZAI, tok, rate, 1.0), m)
    assert mg.api_margin(mg.Offer(mix, AIR_ZAI, t_star, rate, 1.0)).gross_margin == pytest.approx(m, abs=1e-9)


def test_what_if_bundle_is_consistent_with_its_parts():
    out = fleet.what_if(gold(0.6), target_margin=0.3, price_declines=(0.5,), years=1)
    assert set(out) == {"margin", "break_even", "price_decline"}  # optional parts only on request
    assert out["margin"]["gross_margin"] == pytest.approx(mg.api_margin(gold(0.6)).gross_margin)
    # at the break-even utilization for a 30% target the margin is 30%
    u = out["break_even"]["utilization"]
    assert mg.api_margin(gold(u)).gross_margin == pytest.approx(0.3, abs=1e-9)
    # year 1 of a 50% price decline halves revenue: margin = 1 - cost / (revenue / 2)
    base = mg.api_margin(gold(0.6))
    y1 = out["price_decline"]["0.5"][1]
    assert y1["gross_margin"] == pytest.approx(1 - base.cost_usd_per_request / (base.revenue_usd_per_request / 2))
    full = fleet.what_if(gold(0.6), sensitivity=True, curve=True, subscription=fleet.SubscriptionQuery(10.0, 100, 0.0))
    assert {"sensitivity", "curve", "subscription"} <= set(full)
