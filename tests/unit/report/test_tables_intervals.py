"""The points table shows a figure's 95% confidence interval next to it (bench.report.tables.with_interval)."""

import pandas as pd

from bench.report.tables import point_table, with_interval


def test_latency_percentile_with_its_interval():
    r = {"ttft_ms_p50": 100.0, "ttft_ms_p50_ci_lo": 90.0, "ttft_ms_p50_ci_hi": 112.5}
    assert with_interval(r, "ttft_ms_p50", "100") == "100 [90, 112.5]"


def test_per_gpu_rate_takes_the_rate_interval_over_gpu_count():
    # output_tok_s interval [1000, 1200] on 2 GPUs -> per GPU [500, 600]
    r = {"output_tok_s_per_gpu": 550.0, "output_tok_s_ci_lo": 1000.0, "output_tok_s_ci_hi": 1200.0, "gpu_count": 2}
    assert with_interval(r, "output_tok_s_per_gpu", "550") == "550 [500, 600]"


def test_no_interval_leaves_the_text():
    assert with_interval({"ttft_ms_p50": 1.0}, "ttft_ms_p50", "1") == "1"
    assert with_interval({"ttft_ms_p50_ci_lo": float("nan"), "ttft_ms_p50_ci_hi": 2.0}, "ttft_ms_p50", "1") == "1"
    assert with_interval({"ttft_ms_p50_ci_lo": 1.0, "ttft_ms_p50_ci_hi": 2.0}, "ttft_ms_p50", "-") == "-"
    assert with_interval({"status_ci_lo": 1.0}, "status", "ok") == "ok"


def test_point_table_cell():
    df = pd.DataFrame([{"point_id": "p1", "tpot_ms_p90": 20.0, "tpot_ms_p90_ci_lo": 19.0, "tpot_ms_p90_ci_hi": 21.5}])
    t = point_table(df, 0.8)
    assert t.rows == [["p1", "20 [19, 21.5]"]]
