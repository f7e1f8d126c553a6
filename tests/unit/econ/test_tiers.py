"""Length-tiered prices priced per request, not on the mean request (issue 24, item 2); cache writes an
explicit input (item 4); price-decline break-evens at the target margin (item 6).

Hand calculation (glm-4.5-air@bigmodel, CNY x 0.14 USD/CNY; input < 32K; output <= 199 tokens:
in 0.8 / cached 0.16 / out 2.0 CNY per M = $0.112 / $0.0224 / $0.28; output >= 200: out 6.0 CNY = $0.84):
  four requests, 1000 prompt tokens each (800 cached), outputs 100, 150, 300, 450:
  input part = 200 x 0.112 + 800 x 0.0224 = 40.32 (USD per 1e6 requests-tokens, i.e. 40.32e-6 USD)
  revenues (1e-6 USD): 40.32 + 28 = 68.32; 40.32 + 42 = 82.32; 40.32 + 252 = 292.32; 40.32 + 378 = 418.32
  mean = 861.28 / 4 = 215.32e-6 USD; the mean request (250 out, upper tier): 40.32 + 210 = 250.32e-6 USD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.config.prices import load_price_book
from bench.econ.margin import Offer, api_margin, break_even_utilization
from bench.econ.pricing import RequestTokens, TrafficMix
from bench.econ.scenarios import price_decline_scenarios

FX = 0.14


def _reqs() -> RequestTokens:
    df = pd.DataFrame({
        "ok": [True, True, True, True, True], "warmup": [False, False, False, False, True],
        "cooldown": [False] * 5, "prompt_tokens": [1000, 1000, 1000, 1000, 5000],
        "output_tokens": [100, 300, 150, 450, 1000], "cached_input_tokens": [800, 800, 800, 800, 0],
    })
    r = RequestTokens.from_frame(df)
    assert r is not None
    return r


def test_each_measured_request_is_priced_at_its_own_tier():
    entry = load_price_book().get("glm-4.5-air@bigmodel")
    reqs = _reqs()
    assert len(reqs) == 4  # the warm-up request is not priced
    mix = reqs.mix
    assert (mix.input_tokens, mix.output_tokens, mix.cached_share) == (1000, 250, 0.8)
    offer = Offer(mix, entry, 2500.0, 2.0, 1.0, FX, requests=reqs)
    assert offer.revenue_usd == pytest.approx(215.32e-6, rel=1e-12)
    assert offer.revenue_usd_mean_request == pytest.approx(250.32e-6, rel=1e-12)
    # cost: 250 / 2500 = 0.1 GPU-s x $2 / 3600 = 55.5556e-6 -> break-even U = 55.5556 / 215.32 = 0.2580139
    assert break_even_utilization(offer) == pytest.approx(0.1 * 2 / 3600 / 215.32e-6, rel=1e-12)
    assert api_margin(offer).break_even_utilization == pytest.approx(0.2580139, abs=1e-7)


def test_a_stated_length_distribution_keeps_its_means_and_moves_revenue():
    entry = load_price_book().get("glm-4.5-air@bigmodel")
    mix = TrafficMix(2000, 500)
    reqs = RequestTokens.lognormal(mix, 0.0, 1.0)
    assert np.mean(reqs.output) == pytest.approx(500) and np.mean(reqs.input) == pytest.approx(2000)
    flat = Offer(mix, entry, 1000.0, 2.0, 1.0, FX)
    spread = Offer(mix, entry, 1000.0, 2.0, 1.0, FX, requests=reqs)
    # the mean request: (2000 x 0.112 + 500 x 0.84) / 1e6 = 644e-6 USD
    assert flat.revenue_usd == pytest.approx(644e-6, rel=1e-12)
    # with a spread some requests fall under 200 output tokens and pay $0.28 instead of $0.84 per M output:
    # revenue can only fall, and by the price gap on those requests' output tokens
    short = reqs.output <= 199
    expected = (2000 * 0.112 + np.mean(np.where(short, 0.28, 0.84) * reqs.output)) / 1e6
    assert spread.revenue_usd == pytest.approx(expected, rel=1e-12)
    assert 0 < short.mean() < 1 and spread.revenue_usd < flat.revenue_usd
    # sigma 0: every request is the mean -> the same revenue as the mean request
    same = Offer(mix, entry, 1000.0, 2.0, 1.0, FX, requests=RequestTokens.lognormal(mix))
    assert same.revenue_usd == pytest.approx(flat.revenue_usd, rel=1e-12)


def test_cache_writes_are_zero_unless_stated():
    entry = load_price_book().get("minimax-m2@minimax")  # in 0.30, cached 0.03, write 0.375, out 1.20
    tok, rate = 1000.0, 2.0
    hit = TrafficMix(2000, 500, 0.5)
    # (1000 x 0.30 + 1000 x 0.03 + 500 x 1.20) / 1e6 = 930e-6
    assert Offer(hit, entry, tok, rate).revenue_usd == pytest.approx(930e-6, rel=1e-12)
    stated = TrafficMix(2000, 500, 0.5, cache_write_share=0.25)  # 500 written: + 500 x (0.375 - 0.30)
    assert Offer(stated, entry, tok, rate).revenue_usd == pytest.approx(967.5e-6, rel=1e-12)


def test_price_decline_break_even_is_at_the_target_margin():
    entry = load_price_book().get("glm-4.5-air@zai")
    offer = Offer(TrafficMix(2000, 500), entry, 1000.0, 1.55, 0.4)
    rows = price_decline_scenarios(offer, years=1, price_decline_per_year=0.5, target_margin=0.3)
    # revenue 950e-6, cost at U=1 0.5 x 1.55 / 3600 = 215.278e-6; year 0: 215.278 / (950 x 0.7) = 0.323726
    assert rows[0]["break_even_utilization"] == pytest.approx(0.5 * 1.55 / 3600 / (950e-6 * 0.7), rel=1e-12)
    # year 1 at half price: 215.278 / (475 x 0.7) = 0.647452
    assert rows[1]["break_even_utilization"] == pytest.approx(0.5 * 1.55 / 3600 / (475e-6 * 0.7), rel=1e-12)
    assert rows[1]["target_margin"] == 0.3
