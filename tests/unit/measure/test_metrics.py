"""Metric formulas against values computed by hand (times in ns; 1 ms = 1e6 ns)."""

import math

import pytest

from bench.config.slo import parse_slo
from bench.measure.metrics import RequestRecord, percentile_stats, summarize

MS = 1_000_000


def rec(idx, send_ms, chunks_ms, usage=None, client=None, prompt=10, warmup=False, ok=True):
    return RequestRecord(
        request_idx=idx, send_ns=send_ms * MS, input_tokens=prompt, max_tokens=len(chunks_ms),
        chunk_ns=[c * MS for c in chunks_ms], done_ns=(chunks_ms[-1] + 1) * MS if chunks_ms else send_ms * MS,
        ok=ok, usage_completion_tokens=usage, client_output_tokens=client, warmup=warmup,
    )


def test_single_request_ttft_tpot_itl_e2el():
    # sent at 0, chunks at 100, 120, 150, 190 ms, usage says 4 tokens
    r = rec(0, 0, [100, 120, 150, 190], usage=4)
    assert r.ttft_ms == 100
    assert r.e2el_ms == 190
    # TPOT = (190 - 100) / (4 - 1) = 30
    assert r.tpot_ms == pytest.approx(30.0)
    assert r.itl_ms == [20, 30, 40]


def test_tpot_undefined_for_one_token():
    assert rec(0, 0, [50], usage=1).tpot_ms is None


def test_tpot_uses_server_token_count_not_chunks():
    # 2 chunks but the server says 5 tokens (multi-token chunks): (200-100)/(5-1) = 25
    r = rec(0, 0, [100, 200], usage=5)
    assert r.tpot_ms == pytest.approx(25.0)
    assert r.itl_ms == [100]  # one gap per chunk, not per token


def test_summarize_throughput_window_and_warmup_excluded():
    records = [
        rec(-1, -500, [-400, -300], usage=2, warmup=True),  # warm-up: ignored
        rec(0, 0, [100, 200, 300], usage=3, prompt=10),  # done at 301
        rec(1, 100, [300, 500, 999], usage=3, prompt=20),  # done at 1000
    ]
    row = summarize(records, gpu_count=2)
    # window: first send 0 ms -> last done 1000 ms = 1.0 s
    assert row["duration_s"] == pytest.approx(1.0)
    assert row["num_requests"] == 2 and row["completed"] == 2 and row["failed"] == 0
    assert row["input_tokens"] == 30 and row["output_tokens"] == 6
    assert row["request_throughput"] == pytest.approx(2.0)
    assert row["output_tok_s"] == pytest.approx(6.0)
    assert row["total_tok_s"] == pytest.approx(36.0)
    assert row["output_tok_s_per_gpu"] == pytest.approx(3.0)
    assert row["total_tok_s_per_gpu"] == pytest.approx(18.0)
    # TTFT samples 100, 200 -> mean 150, p50 150, p90 = 100 + 0.9*100 = 190
    assert row["ttft_ms_mean"] == pytest.approx(150)
    assert row["ttft_ms_p90"] == pytest.approx(190)
    # TPOT: (300-100)/2 = 100 and (999-300)/2 = 349.5 -> median 224.75
    assert row["tpot_ms_p50"] == pytest.approx(224.75)
    assert row["interactivity_tok_s_user"] == pytest.approx(1000 / 224.75)
    # ITL samples: 100, 100, 200, 499 -> mean 224.75
    assert row["itl_ms_mean"] == pytest.approx(224.75)
    assert row["e2el_ms_p50"] == pytest.approx((300 + 899) / 2)


def test_goodput_counts_only_requests_meeting_every_slo():
    records = [rec(0, 0, [100, 200], usage=2), rec(1, 0, [600, 700], usage=2), rec(2, 0, [100, 900], usage=2)]
    # TTFT <= 500 drops #1; TPOT <= 200 drops #2 (tpot 800) -> 1 good request over window 0..901 ms
    row = summarize(records, slo=parse_slo("ttft_ms<=500,tpot_ms<=200"))
    assert row["good_requests"] == 1
    assert row["goodput_req_s"] == pytest.approx(1 / 0.901)


def test_failed_requests_count_but_contribute_no_latency():
    records = [rec(0, 0, [100, 200], usage=2), rec(1, 0, [], ok=False)]
    row = summarize(records)
    assert row["completed"] == 1 and row["failed"] == 1
    assert row["ttft_ms_p50"] == pytest.approx(100)


def test_token_discrepancy():
    records = [rec(0, 0, [1, 2], usage=10, client=9), rec(1, 0, [1, 2], usage=10, client=10)]
    row = summarize(records)
    assert row["token_count_mismatches"] == 1
    assert row["token_discrepancy_pct"] == pytest.approx(100 * (19 - 20) / 20)
    assert row["usage_missing"] == 0


def test_missing_usage_falls_back_to_client_count_and_is_reported():
    r = rec(0, 0, [100, 200, 300], usage=None, client=3)
    assert r.output_tokens == 3
    assert summarize([r])["usage_missing"] == 1


def test_percentiles_match_linear_interpolation_by_hand():
    s = percentile_stats("x", [1, 2, 3, 4])
    # p50 = 2.5; p90: rank 0.9*3 = 2.7 -> 3 + 0.7*(4-3) = 3.7; p99: 2.97 -> 3.97
    assert s["x_p50"] == pytest.approx(2.5)
    assert s["x_p90"] == pytest.approx(3.7)
    assert s["x_p99"] == pytest.approx(3.97)
    assert s["x_mean"] == pytest.approx(2.5)


def test_no_samples_gives_none_not_nan():
    s = percentile_stats("x", [])
    assert all(v is None for v in s.values())
    row = summarize([])
    assert row["output_tok_s"] is None and not any(isinstance(v, float) and math.isnan(v) for v in row.values())


def test_token_rates_count_every_token_streamed_inside_the_measured_window():
    # measured: sent at 0, chunks 100..400 (4 tokens), done 401 -> window 0..401 ms (0.401 s)
    measured = rec(0, 0, [100, 200, 300, 400], usage=4, prompt=10)
    # warm-up still streaming at the start: chunks at -50 (outside) and 50, 150 (inside), 2 tokens per chunk
    warm = rec(-1, -100, [-50, 50, 150], usage=6, prompt=7, warmup=True)
    # cool-down: first chunk at 350 (prefill ends inside: its 5 prompt tokens count), 380 inside, 450 outside
    cool = rec(1, 300, [350, 380, 450], usage=3, prompt=5)
    cool.cooldown = True
    row = summarize([warm, measured, cool])
    assert row["num_requests"] == 1 and row["output_tokens"] == 4 and row["input_tokens"] == 10
    # window output tokens: measured 4 + warm-up 2 chunks x 2 tokens + cool-down 2 chunks x 1 token = 10
    assert row["window_output_tokens"] == pytest.approx(10)
    # window input tokens: measured 10 + cool-down 5 (the warm-up's first chunk at -50 is outside) = 15
    assert row["window_input_tokens"] == pytest.approx(15)
    assert row["output_tok_s"] == pytest.approx(10 / 0.401)
    assert row["total_tok_s"] == pytest.approx(25 / 0.401)
    assert row["request_throughput"] == pytest.approx(1 / 0.401)
    # latency percentiles come from the measured request only
    assert row["ttft_ms_p50"] == pytest.approx(100)


def test_point_says_which_clock_timed_its_requests():
    # each completed request names its clock; the point carries it when they agree, "mixed" when not, None when no
    # request says (a warm-up request's or a failed one's clock does not count)
    def timed(sources, failed_source=None):
        recs = [rec(i, 0, [10, 20], usage=2) for i in range(len(sources))]
        for r, s in zip(recs, sources, strict=True):
            r.timestamp_source = s
        bad = rec(9, 0, [10, 20], usage=2, ok=False)
        bad.timestamp_source = failed_source
        return summarize([*recs, bad])["timestamp_source"]

    assert timed(["kernel", "kernel"], failed_source="loop") == "kernel"
    assert timed(["loop", "loop"]) == "loop"
    assert timed(["kernel", "kernel+loop"]) == "mixed"
    assert timed([None, None]) is None
