"""Margins that count the prefix cache on both sides (issue 15), checked by hand.

Prices: glm-4.5@zai in configs/prices.yaml (input 0.60, cached input 0.11, output 2.20 USD per M tokens).
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.prices import load_price_book
from bench.econ import cache
from bench.econ import margin as mg


def test_margin_with_cache_by_hand():
    entry = load_price_book().get("glm-4.5@zai")
    mix = mg.TrafficMix(1000, 100, 0.8)
    r = mg.api_margin(mg.Offer(mix, entry, 50.0, 2.0, 0.5))
    # revenue = (200 x 0.60 + 800 x 0.11 + 100 x 2.20) / 1e6 = (120 + 88 + 220) / 1e6
    assert r.revenue_usd_per_request == pytest.approx(428e-6)
    # cost = 100 / 50 GPU-s x $2/h / 3600 / 0.5 = 4 / 1800
    assert r.cost_usd_per_request == pytest.approx(4 / 1800)
    assert r.gross_margin == pytest.approx(1 - (4 / 1800) / 428e-6)
    # one GPU-hour at U 0.5 serves 50 x 3600 x 0.5 / 100 = 900 requests -> 900 x 428e-6 USD
    assert r.revenue_usd_per_gpu_hour == pytest.approx(900 * 428e-6)
    assert r.cost_usd_per_gpu_hour == 2.0
    assert 1 - r.cost_usd_per_gpu_hour / r.revenue_usd_per_gpu_hour == pytest.approx(r.gross_margin)


def _points(frac, caching=True):
    return pd.DataFrame([{"point_id": "p", "status": "ok", "model": "m", "completed": 10, "input_tokens": 10_000,
                          "output_tokens": 1_000, "output_tok_s_per_gpu": 50.0, "usd_per_gpu_hour": 2.0,
                          "cached_input_frac": frac, "enable_prefix_caching": caching}])


def test_margin_per_point_uses_the_measured_hit_rate_on_revenue():
    entry = load_price_book().get("glm-4.5@zai")
    (row,) = mg.margin_per_point(_points(0.8), entry, 0.5, cached_share=0.1)  # measured 0.8 wins over 0.1
    assert row["cached_share"] == 0.8 and row["cached_share_source"] == cache.MEASURED
    assert row["gross_margin"] == pytest.approx(1 - (4 / 1800) / 428e-6)
    (row,) = mg.margin_per_point(_points(None), entry, 0.5, cached_share=0.1)
    assert row["cached_share"] == 0.1 and row["cached_share_source"] == cache.GIVEN_REVENUE_ONLY


def test_prefill_scaled_throughput_by_hand():
    # prefill 40% of GPU time, half of it cached: time 1 - 0.4 x 0.5 = 0.8 -> throughput x 1.25
    assert cache.prefill_scaled_tok_s(100.0, 0.5, 0.4) == pytest.approx(125.0)


def test_planner_cached_share_skips_prefill_work():
    from bench.planner.estimate import estimate

    base = estimate("glm-4.5-air", "h200", 1, "fp8", 8192, 256, (16,))
    hit = estimate("glm-4.5-air", "h200", 1, "fp8", 8192, 256, (16,), cached_share=0.9)
    assert hit.curve[0].ttft_ms < base.curve[0].ttft_ms
    assert hit.curve[0].output_tok_s_per_gpu > base.curve[0].output_tok_s_per_gpu


runner = CliRunner()


@pytest.mark.parametrize("share", ["1.5", "-0.1", "nan"])
def test_cached_share_outside_unit_interval_is_exit_2(share):
    r = runner.invoke(app, ["margin", "--price", "glm-4.5@zai", "--tok-s-per-gpu", "100", "--usd-per-gpu-hour", "2",
                            "--cached-share", share])
    assert r.exit_code == 2, r.output
    assert "cached" in r.output and "share" in r.output and "Traceback" not in r.output


def test_what_if_with_cached_share_and_prefill_fraction_is_an_estimate():
    r = runner.invoke(app, ["margin", "--price", "glm-4.5@zai", "--tok-s-per-gpu", "100", "--usd-per-gpu-hour", "2",
                            "--cached-share", "0.5", "--prefill-fraction", "0.4", "--json"])
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout)
    assert out["inputs"]["output_tok_s_per_gpu"] == pytest.approx(125.0)
    assert out["inputs"]["cached_share_source"].startswith("ESTIMATE")


def test_vllm_server_asks_for_cached_token_details_and_says_caching_off():
    from bench.config.sweep import EngineSpec, ServerSpec
    from bench.engines.vllm_server import render_args

    args = render_args(ServerSpec(model="glm-4.5-tiny"), "/m", 1, EngineSpec(), on_cpu=True)
    assert "--enable-prompt-tokens-details" in args and "--no-enable-prefix-caching" in args
    args = render_args(ServerSpec(model="glm-4.5-tiny", enable_prefix_caching=True), "/m", 1, EngineSpec(), on_cpu=True)
    assert "--enable-prefix-caching" in args
