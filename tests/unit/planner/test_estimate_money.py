"""The money of one estimated point (bench.planner.estimate._money): priced at the fleet utilization
asked for, like every other money figure in maas-bench, golden numbers worked by hand."""

from __future__ import annotations

import pytest

from bench.config.prices import PriceEntry
from bench.econ.margin import TrafficMix
from bench.planner.estimate import _money

# GLM-4.5-Air at Z.ai: $0.20 in, $1.10 out per M tokens (shared/reference/prices.md)
AIR_ZAI = PriceEntry(currency="USD", as_of="2026-11-24", source="test", input_per_m=0.20, output_per_m=1.10)


def test_money_of_a_point_at_utilization_golden():
    # a GPU at $2/h doing T = 1000 output tok/s (1250 input + output tok/s) on a 2000 in / 500 out mix, U = 0.5
    m = _money(1000.0, 1250.0, 2.0, AIR_ZAI, TrafficMix(2000, 500), None, 0.5)
    assert m["utilization"] == 0.5
    # $/M output = X / (T x 3600 x U) x 1e6 = 2 / (1000 x 3600 x 0.5) x 1e6 = 2 / 1.8 = $1.111111
    assert m["usd_per_m_output_tokens"] == pytest.approx(1.1111111111, rel=1e-9)
    # $/M input + output = 2 / (1250 x 3600 x 0.5) x 1e6 = 2 / 2.25 = $0.888889
    assert m["usd_per_m_tokens"] == pytest.approx(0.8888888889, rel=1e-9)
    # revenue/request = 2000 x 0.20e-6 + 500 x 1.10e-6 = $0.00095; cost = 0.5 GPU-s x 2 / 3600 / 0.5 = $0.000555556
    # margin = 1 - 0.000555556 / 0.00095 = 0.415205
    assert m["gross_margin"] == pytest.approx(0.4152046784, rel=1e-9)
    # a GPU-hour at U = 0.5 serves 1000 x 3600 x 0.5 / 500 = 3600 requests x $0.00095 = $3.42; it costs $2
    assert m["revenue_usd_per_gpu_hour"] == pytest.approx(3.42, rel=1e-9)
    assert m["cost_usd_per_gpu_hour"] == 2.0
    # break-even U = cost at U = 1 / revenue = 0.000277778 / 0.00095 = 0.292398 (whatever U is asked)
    assert m["break_even_utilization"] == pytest.approx(0.2923976608, rel=1e-9)


def test_money_without_a_rate_still_says_its_utilization():
    assert _money(1000.0, 1250.0, None, None, TrafficMix(2000, 500), None, 0.4) == {
        "usd_per_m_output_tokens": None, "usd_per_m_tokens": None, "utilization": 0.4}
