"""Prometheus text parsing and vLLM /metrics before/after deltas (hand-made expositions)."""

from __future__ import annotations

import math

import pytest

from bench.measure.prometheus import counter_delta, metric_sum, scrape_prometheus, vllm_metric_deltas

EXPOSITION = r"""
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="glm-4.5-air",engine="0"} 3.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.5",model_name="glm-4.5-air"} 2.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="glm-4.5-air"} 7.0
vllm:e2e_request_latency_seconds_sum{model_name="glm-4.5-air"} 12.25
vllm:e2e_request_latency_seconds_count{model_name="glm-4.5-air"} 7.0
process_start_time_seconds 1.7e+09
weird{path="a \"quoted\", comma, and \\ backslash"} 42 1700000000000
nan_metric NaN
inf_metric +Inf
neg_inf_metric -Inf
this line is not a sample
broken{label="unterminated} 1
"""


def test_scrape_parses_names_labels_values() -> None:
    m = scrape_prometheus(EXPOSITION)
    # labels are re-emitted sorted by name: engine before model_name
    assert m['vllm:num_requests_running{engine="0",model_name="glm-4.5-air"}'] == 3.0
    assert m['vllm:e2e_request_latency_seconds_sum{model_name="glm-4.5-air"}'] == 12.25
    assert m['vllm:e2e_request_latency_seconds_count{model_name="glm-4.5-air"}'] == 7.0
    assert m['vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="glm-4.5-air"}'] == 7.0
    assert m["process_start_time_seconds"] == 1.7e9
    # escaped quote, comma and backslash inside a label value; trailing timestamp ignored
    assert m[r'weird{path="a \"quoted\", comma, and \\ backslash"}'] == 42.0
    assert math.isnan(m["nan_metric"])
    assert m["inf_metric"] == math.inf and m["neg_inf_metric"] == -math.inf


def test_scrape_skips_comments_and_malformed_lines() -> None:
    m = scrape_prometheus(EXPOSITION)
    assert not any(k.startswith("#") or k.startswith("this") or k.startswith("broken") for k in m)
    assert len(m) == 10  # the ten well-formed sample lines above
    assert scrape_prometheus("") == {}


def test_metric_sum_over_label_sets_and_exact_names() -> None:
    m = scrape_prometheus(
        'vllm:prompt_tokens_total{engine="0"} 100\n'
        'vllm:prompt_tokens_total{engine="1"} 50\n'
        "vllm:prompt_tokens_total_extra 7\n"
    )
    assert metric_sum(m, "vllm:prompt_tokens_total") == 150.0  # not the _extra series
    assert metric_sum(m, "absent", "vllm:prompt_tokens_total") == 150.0
    assert metric_sum(m, "absent") is None


def _before_after(series: list[tuple[str, float, float]], labels: str) -> tuple[dict, dict]:
    """Scraped snapshots from a (series name, value before, value after) table; every line has `labels`."""
    before, after = (
        scrape_prometheus("".join(f"vllm:{name}{{{labels}}} {row[col]}\n" for name, *row in series))
        for col in (0, 1)
    )
    return before, after


# vLLM V1 names, one engine
V1_SERIES = [
    ("kv_cache_usage_perc", 0.9, 0.25),
    ("prefix_cache_queries_total", 400, 1000),
    ("prefix_cache_hits_total", 100, 400),
    ("num_preemptions_total", 2, 5),
    ("spec_decode_num_drafts_total", 10, 60),
    ("spec_decode_num_draft_tokens_total", 20, 120),
    ("spec_decode_num_accepted_tokens_total", 10, 70),
    ("prompt_tokens_total", 1000, 3048),
    ("generation_tokens_total", 500, 1524),
]


def test_vllm_deltas_v1_names() -> None:
    d = vllm_metric_deltas(*_before_after(V1_SERIES, 'engine="0",model_name="m"'))
    assert d["kv_cache_usage_frac"] == pytest.approx(0.25)  # the gauge after, not before
    assert d["prefix_cache_queries"] == 600  # 1000 - 400
    assert d["prefix_cache_hits"] == 300  # 400 - 100
    assert d["prefix_cache_hit_rate"] == pytest.approx(0.5)  # 300 / 600
    assert d["num_preemptions"] == 3  # 5 - 2
    assert d["spec_draft_acceptance_rate"] == pytest.approx(0.6)  # (70-10) / (120-20)
    assert d["spec_acceptance_length"] == pytest.approx(2.2)  # 1 + 60 / (60-10)
    assert d["prompt_tokens"] == 2048 and d["generation_tokens"] == 1024


def test_vllm_deltas_older_names_and_no_total_suffix() -> None:
    older = [
        ("gpu_cache_usage_perc", 0.1, 0.75),
        ("gpu_prefix_cache_queries", 10, 110),
        ("gpu_prefix_cache_hits", 0, 80),
        ("num_preemptions", 0, 4),
        ("spec_decode_draft_acceptance_rate", 0.5, 0.7),
    ]
    d = vllm_metric_deltas(*_before_after(older, 'model_name="m"'))
    assert d["kv_cache_usage_frac"] == pytest.approx(0.75)
    assert d["prefix_cache_hit_rate"] == pytest.approx(0.8)  # 80 / 100
    assert d["num_preemptions"] == 4
    assert d["spec_draft_acceptance_rate"] == pytest.approx(0.7)  # old gauge, value after
    assert d["spec_acceptance_length"] is None


def test_vllm_deltas_missing_metrics_are_none() -> None:
    d = vllm_metric_deltas({}, scrape_prometheus("process_cpu_seconds_total 3.5\n"))
    assert set(d.values()) == {None}
    assert "kv_cache_usage_frac" in d and "prefix_cache_hit_rate" in d


def test_zero_queries_gives_no_hit_rate() -> None:
    snap = scrape_prometheus("vllm:prefix_cache_queries_total 50\nvllm:prefix_cache_hits_total 20\n")
    d = vllm_metric_deltas(snap, snap)
    assert d["prefix_cache_queries"] == 0
    assert d["prefix_cache_hit_rate"] is None  # 0 / 0 is not a rate


def test_counter_absent_before_and_counter_reset() -> None:
    after = scrape_prometheus("vllm:num_preemptions_total 6\n")
    # created lazily during the point: the whole value is the increase
    assert counter_delta({}, after, "vllm:num_preemptions") == 6
    # went down: the server restarted, Prometheus' rule takes the after value as the increase
    before = scrape_prometheus("vllm:num_preemptions_total 9\n")
    assert counter_delta(before, after, "vllm:num_preemptions") == 6


def test_counters_summed_over_engines_gauge_averaged() -> None:
    before = scrape_prometheus(
        'vllm:num_preemptions_total{engine="0"} 1\nvllm:num_preemptions_total{engine="1"} 2\n'
    )
    after = scrape_prometheus(
        'vllm:num_preemptions_total{engine="0"} 4\nvllm:num_preemptions_total{engine="1"} 7\n'
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.6\n'
    )
    d = vllm_metric_deltas(before, after)
    assert d["num_preemptions"] == 8  # (4 + 7) - (1 + 2)
    assert d["kv_cache_usage_frac"] == pytest.approx(0.4)  # mean of 0.2 and 0.6
