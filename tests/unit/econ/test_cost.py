"""bench.econ.cost: golden cases worked by hand (arithmetic in the comments) and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.econ.cost import (
    energy_usd_per_m_tokens,
    joules_per_token,
    split_cost,
    tco_usd_per_gpu_hour,
    usd_per_m_tokens,
    usd_per_request,
)
from bench.errors import UserInputError


def test_h100_neocloud_golden():
    # 1000 tok/s x 3600 s = 3.6 M tokens per GPU-hour; $1.69 / 3.6 M = $0.469444... per M tokens
    assert usd_per_m_tokens(1000, 1.69) == pytest.approx(0.4694444444, rel=1e-9)


def test_utilization_scales_cost_by_inverse():
    # at U = 0.5 the same GPU-hour yields 1.8 M tokens: 1.69 / 1.8 = 0.938888...
    assert usd_per_m_tokens(1000, 1.69, utilization=0.5) == pytest.approx(0.9388888889, rel=1e-9)


def test_cost_per_request_from_gpu_seconds():
    # 2 GPU-s at $3.60/h = 2 x 0.001 $/s = $0.002; at U = 0.5 twice that
    assert usd_per_request(2.0, 3.6) == pytest.approx(0.002)
    assert usd_per_request(2.0, 3.6, utilization=0.5) == pytest.approx(0.004)


def test_tco_straight_line():
    # capex 43,800 over 5 y = 8,760 $/y = $1.00 per hour of the year (8,760 h)
    # energy 1.0 kW x PUE 1.5 x $0.10/kWh = $0.15/h; hosting $0.05/h; total $1.20/h
    b = tco_usd_per_gpu_hour(43800, 5, 0.0, 1.0, 1.5, 0.10, 0.05)
    assert b.capital_usd_per_gpu_hour == pytest.approx(1.0)
    assert b.energy_usd_per_gpu_hour == pytest.approx(0.15)
    assert b.hosting_usd_per_gpu_hour == pytest.approx(0.05)
    assert b.usd_per_gpu_hour == pytest.approx(1.20)
    # half the capex comes back as residual value: capital halves to $0.50/h
    assert tco_usd_per_gpu_hour(43800, 5, 0.5, 1.0, 1.5, 0.10, 0.05).capital_usd_per_gpu_hour == pytest.approx(0.5)


def test_tco_cost_of_capital():
    # a one-year loan of $8,760 at 10% is repaid with $9,636 at the end of the year -> $1.10/h
    b = tco_usd_per_gpu_hour(8760, 1, 0.0, 1.0, 1.0, 0.0, 0.0, cost_of_capital_rate=0.10)
    assert b.capital_usd_per_gpu_hour == pytest.approx(9636 / 8760)
    # with half of it back as residual at year end: 9,636 - 4,380 = 5,256 -> $0.60/h
    b = tco_usd_per_gpu_hour(8760, 1, 0.5, 1.0, 1.0, 0.0, 0.0, cost_of_capital_rate=0.10)
    assert b.capital_usd_per_gpu_hour == pytest.approx(5256 / 8760)


def test_energy():
    # 700 W at 1000 tok/s = 0.7 J per token
    assert joules_per_token(700, 1000) == pytest.approx(0.7)
    # 3.6 J/token x 1e6 tokens = 3.6e6 J = 1 kWh -> $0.10; with PUE 1.2, $0.12
    assert energy_usd_per_m_tokens(3.6, 0.10) == pytest.approx(0.10)
    assert energy_usd_per_m_tokens(3.6, 0.10, pue=1.2) == pytest.approx(0.12)


def test_split_all_on_output():
    # $0.001 over 500 output tokens = $2.00 per M output tokens, input free
    s = split_cost(0.001, 2000, 500, "output")
    assert (s.input_usd_per_m, s.output_usd_per_m, s.input_share) == (0.0, pytest.approx(2.0), 0.0)


def test_split_by_price_ratio():
    # ratio 0.25: c_out = 0.001 / (2000 x 0.25 + 500) = 1e-6 $/token = $1/M; c_in = $0.25/M;
    # input carries 2000 x 0.25e-6 = $0.0005 = half the cost
    s = split_cost(0.001, 2000, 500, "price-ratio", input_to_output_price_ratio=0.25)
    assert s.output_usd_per_m == pytest.approx(1.0)
    assert s.input_usd_per_m == pytest.approx(0.25)
    assert s.input_share == pytest.approx(0.5)


def test_split_by_time():
    # prefill 0.2 s of 1.0 s -> input gets $0.0002: /2000 x 1e6 = $0.10/M; output $0.0008/500 = $1.60/M
    s = split_cost(0.001, 2000, 500, "time", prefill_s=0.2, decode_s=0.8)
    assert s.input_usd_per_m == pytest.approx(0.10)
    assert s.output_usd_per_m == pytest.approx(1.60)


def test_split_errors_name_the_method():
    with pytest.raises(UserInputError, match="output, price-ratio, time"):
        split_cost(0.001, 2000, 500, "magic")
    with pytest.raises(UserInputError, match="input_to_output_price_ratio"):
        split_cost(0.001, 2000, 500, "price-ratio")
    with pytest.raises(UserInputError, match="prefill_s and decode_s"):
        split_cost(0.001, 2000, 500, "time")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tok_s_per_gpu": 0, "usd_per_gpu_hour": 1.0}, "tok_s_per_gpu"),
        ({"tok_s_per_gpu": -5, "usd_per_gpu_hour": 1.0}, "tok_s_per_gpu"),
        ({"tok_s_per_gpu": 100, "usd_per_gpu_hour": 0}, "usd_per_gpu_hour"),
        ({"tok_s_per_gpu": 100, "usd_per_gpu_hour": 1.0, "utilization": 0}, "utilization"),
        ({"tok_s_per_gpu": 100, "usd_per_gpu_hour": 1.0, "utilization": 1.01}, "utilization"),
    ],
)
def test_bad_input_names_field(kwargs, field):
    with pytest.raises(UserInputError, match=field):
        usd_per_m_tokens(**kwargs)


def test_tco_bad_input():
    with pytest.raises(UserInputError, match="pue must be >= 1"):
        tco_usd_per_gpu_hour(1000, 5, 0.1, 1.0, 0.9, 0.1, 0.1)
    with pytest.raises(UserInputError, match=r"residual_fraction must be in \[0, 1\)"):
        tco_usd_per_gpu_hour(1000, 5, 1.0, 1.0, 1.2, 0.1, 0.1)


pos = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
util = st.floats(min_value=1e-3, max_value=1.0)


@settings(deadline=None)  # shared CI machine: time is not the property
@given(tok=pos, rate=pos, u=util)
def test_property_cost_scales_as_inverse_utilization(tok, rate, u):
    assert usd_per_m_tokens(tok, rate, u) * u == pytest.approx(usd_per_m_tokens(tok, rate, 1.0), rel=1e-12)


@settings(deadline=None)  # shared CI machine: time is not the property
@given(
    cost=pos,
    inp=st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e6)),
    out=st.floats(min_value=1, max_value=1e6),
    ratio=st.floats(min_value=0, max_value=10),
    pre=st.floats(min_value=0, max_value=100),
    dec=st.floats(min_value=1e-3, max_value=100),
    method=st.sampled_from(["output", "price-ratio", "time"]),
)
def test_property_split_conserves_cost(cost, inp, out, ratio, pre, dec, method):
    s = split_cost(cost, inp, out, method, input_to_output_price_ratio=ratio, prefill_s=pre, decode_s=dec)
    rebuilt = (inp * s.input_usd_per_m + out * s.output_usd_per_m) / 1e6
    assert rebuilt == pytest.approx(cost, rel=1e-9)
    assert 0.0 <= s.input_share <= 1.0
