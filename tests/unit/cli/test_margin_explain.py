"""`margin --explain` names where its throughput came from (issue 24, item 6), and the what-if form prices a
stated length distribution request by request (item 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.cli.app import app

M = ["margin", "--price", "glm-4.5-air@zai", "--gpu", "h100", "--output-tok-s-per-gpu", "1000"]


def test_prefill_fraction_throughput_is_called_an_estimate():
    r = CliRunner().invoke(app, [*M, "--cached-share", "0.5", "--prefill-fraction", "0.2", "--explain", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # 1000 / (1 - 0.2 x 0.5) = 1111.11 output tok/s
    assert out["inputs"]["output_tok_s_per_gpu"] == pytest.approx(1000 / 0.9)
    line = next(ln for ln in out["explain"] if ln.startswith("2. "))
    assert "ESTIMATED from --prefill-fraction 0.2" in line and "not measured" in line
    assert "was measured on this mix" not in line


def test_length_distribution_prices_each_request_at_its_tier():
    base = ["margin", "--price", "glm-4.5-air@bigmodel", "--gpu", "h100", "--output-tok-s-per-gpu", "1000", "--json"]
    flat = json.loads(CliRunner().invoke(app, base).stdout)
    spread = json.loads(CliRunner().invoke(app, [*base, "--output-tokens-sigma", "1"]).stdout)
    # mean request 2000 / 500: (2000 x 0.112 + 500 x 0.84) / 1e6 = 644e-6 USD at the >= 200 tier
    assert flat["margin"]["revenue_usd_per_request"] == pytest.approx(644e-6, rel=1e-12)
    assert spread["margin"]["revenue_usd_per_request_mean_request"] == pytest.approx(644e-6, rel=1e-12)
    assert spread["margin"]["revenue_usd_per_request"] < 644e-6
    assert "lognormal" in spread["inputs"]["revenue_basis"]
    assert spread["exchange_rate"]["usd_per_cny"] == 0.14 and "source" in spread["exchange_rate"]
