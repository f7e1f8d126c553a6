"""The report and `margin --results --json` print the same money figures for the same run (issue 24, item 1):
one Offer per point, at the same default U, with the point's measured cache share and each measured request
at its own price tier.

Fixture (hand calculation; the same four requests as tests/unit/econ/test_tiers.py):
  one ok point of glm-4.5-air at 2500 output tok/s per GPU and $2/GPU-hour, four measured requests of 1000
  prompt tokens (800 served from the prefix cache: measured share 0.8) and 100 / 300 / 150 / 450 output
  tokens, plus a warm-up request that is not priced.
  price glm-4.5-air@bigmodel (CNY x 0.14): revenue per request = mean of each request at its own tier
    = 215.32e-6 USD (the mean request alone, all at the >= 200-token tier, would be 250.32e-6).
  default U = 0.4: cost per request = 250 / 2500 x 2 / 3600 / 0.4 = 138.889e-6 USD
    gross margin = 1 - 138.889 / 215.32 = 0.354965; break-even U = 55.5556 / 215.32 = 0.258014
    $/M output tokens = 2 / (2500 x 3600 x 0.4 / 1e6) = $0.555556
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.report import build_report
from bench.sweep.store import RunStore

PRICE = "glm-4.5-air@bigmodel"
REV = 215.32e-6
COST_U04 = 250 / 2500 * 2 / 3600 / 0.4


def _run(root):
    d = root / "cache-run"
    store = RunStore(d)
    store.init({"name": "cache-run", "description": "cache fixture"}, {"device": "cpu", "maas_bench": "0.1.0"})
    tok = 2500.0
    row = {
        "run_id": "cache-run", "point_id": "c1", "point_index": 0, "status": "ok", "error": None,
        "model": "glm-4.5-air", "engine": "vllm", "dtype": "bfloat16", "quantization": "none",
        "kv_cache_dtype": "auto", "max_num_seqs": 32, "tensor_parallel_size": 1, "device": "cpu",
        "gpu_type": "cpu-2core", "gpu_count": 1, "hardware_tier": "on-demand", "workload": "multiturn",
        "concurrency": 4, "request_rate": None, "num_requests": 4, "completed": 4, "failed": 0,
        "input_tokens": 4000, "output_tokens": 1000, "cached_input_tokens": 3200, "cached_input_frac": 0.8,
        "enable_prefix_caching": True, "output_tok_s": tok, "output_tok_s_per_gpu": tok,
        "total_tok_s_per_gpu": 5 * tok, "ttft_ms_p50": 50.0, "ttft_ms_p90": 80.0, "tpot_ms_p50": 10.0,
        "tpot_ms_p90": 12.0, "e2el_ms_p99": 900.0, "interactivity_tok_s_user": 100.0,
        "usd_per_gpu_hour": 2.0, "usd_per_m_output": 2 / (tok * 0.0036), "usd_per_m_total": 2 / (5 * tok * 0.0036),
    }
    reqs = pd.DataFrame({
        "point_id": ["c1"] * 5, "request_idx": [0, 1, 2, 3, 4], "ok": [True] * 5,
        "warmup": [True, False, False, False, False], "cooldown": [False] * 5,
        "prompt_tokens": [5000, 1000, 1000, 1000, 1000], "input_tokens": [5000, 1000, 1000, 1000, 1000],
        "output_tokens": [1000, 100, 300, 150, 450], "cached_input_tokens": [0, 800, 800, 800, 800],
    })
    store.write_point(row, reqs)
    return d


FIELDS = ("gross_margin", "break_even_utilization", "cost_usd_per_m_output_tokens", "cost_usd_per_m_tokens",
          "revenue_usd_per_gpu_hour", "revenue_usd_per_request", "cached_share", "utilization")


def test_report_and_margin_json_agree_at_the_default_u(tmp_path):
    run = _run(tmp_path)
    r = CliRunner().invoke(app, ["margin", "--results", str(run), "--price", PRICE, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    (m,) = out["points"]
    res = build_report([run], tmp_path / "rep", price=PRICE)
    h = res.headline[0]
    assert h["point_id"] == "c1" and res.utilization == out["utilization"] == 0.4
    for k in FIELDS:
        assert h[k] == pytest.approx(m[k], rel=1e-12), k
    # and both equal the hand calculation
    assert m["revenue_usd_per_request"] == pytest.approx(REV, rel=1e-12)
    assert m["revenue_usd_per_request_mean_request"] == pytest.approx(250.32e-6, rel=1e-12)
    assert m["gross_margin"] == pytest.approx(1 - COST_U04 / REV, rel=1e-12)
    assert m["break_even_utilization"] == pytest.approx(COST_U04 * 0.4 / REV, rel=1e-12)
    assert m["cost_usd_per_m_output_tokens"] == pytest.approx(2 / (2500 * 3600 * 0.4 / 1e6), rel=1e-12)
    assert m["cached_share"] == 0.8 and m["cached_share_source"] == "measured"
    assert "each of 4 measured requests" in m["revenue_basis"]
    # the exchange rate travels with the figures
    assert out["exchange_rate"]["usd_per_cny"] == 0.14 and out["exchange_rate"]["as_of"]
    assert res.exchange_rate == out["exchange_rate"]


def test_report_text_states_u_cache_share_and_rate_beside_the_figures(tmp_path):
    run = _run(tmp_path)
    res = build_report([run], tmp_path / "rep", price=PRICE)
    md = res.markdown_path.read_text()
    head = md.split("## Headline")[1].split("## Warnings")[0]
    # 0.354965 -> 35.5%; 0.258014 -> 25.8%; $0.555556 -> $0.5556
    assert ("at U=0.4 and cache share 80% measured: $0.5556 per M output tokens" in head
            and "gross margin 35.5%" in head and "break-even at 25.8% utilization (same cache share)" in head)
    assert "0.14 USD/CNY (as of " in head
    assert "$/M output (U=0.4)" in head and "gross margin (U=0.4)" in head and "| 80% measured |" in head
    html = res.html_path.read_text()
    assert "gross margin 35.5%" in html and "0.14 USD/CNY" in html


def test_report_terminal_table_prints_percentages(tmp_path):
    run = _run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(run), "--price", PRICE, "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "35.5%" in r.stdout and "25.8%" in r.stdout and "U=0.4" in r.stdout and "0.14 USD/CNY" in r.stdout


def test_explain_on_results_walks_through_the_same_offer(tmp_path):
    run = _run(tmp_path)
    r = CliRunner().invoke(app, ["margin", "--results", str(run), "--price", PRICE, "--explain", "--json"])
    assert r.exit_code == 0, r.output
    ex = json.loads(r.stdout)["explain"]
    text = "\n".join(ex["lines"])
    assert ex["point_id"] == "c1"
    # revenue: the mean over the 4 measured requests, each at its tier; the mean request shown beside it
    assert "mean over 4 requests" in text and "= $0.00021532" in text and "= $0.00025032" in text
    # margin 1 - 138.889e-6 / 215.32e-6 = 35.50%; break-even U = 55.5556e-6 / 215.32e-6 = 25.80%
    assert "= 35.50%" in text and "= 25.80%" in text
    assert "MEASURED at point c1" in text and "measured cache share 0.8" in text
    assert "CNY x 0.14 USD/CNY, as of " in text
