"""95% confidence intervals (bench/measure/intervals.py via summarize) against independent formulas and
hand calculations: the asymptotic standard error of a median, a hand-computed batch-means interval, and
the 97.5th percentile of Student's t by numerical integration of its density."""

import math

import numpy as np
import pytest

from bench.measure.intervals import (
    T_975_DF9,
    batch_means_ci,
    bootstrap_percentile_ci,
    ci_figures,
    empty_ci_columns,
)
from bench.measure.metrics import RequestRecord, offline_summary, summarize
from bench.sweep.rows import SCHEMA, validate_row

MS = 1_000_000


def stream(n_requests, gap_ms, chunks=10, first_ms=10):
    """Requests back to back (concurrency 1): request i sends when i-1 ends, one token per chunk every
    gap_ms(i) ms after a first chunk at first_ms. Its tokens stream at 1000 / gap_ms tok/s."""
    recs, t = [], 0
    for i in range(n_requests):
        g = gap_ms(i)
        ch = [t + (first_ms + j * g) * MS for j in range(chunks)]
        recs.append(RequestRecord(request_idx=i, send_ns=t, input_tokens=5, max_tokens=chunks, chunk_ns=ch,
                                  done_ns=ch[-1], ok=True, usage_completion_tokens=chunks))
        t = ch[-1]
    return recs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bootstrap_median_width_matches_asymptotic_formula(seed):
    # median of n normal samples: sd = sigma * sqrt(pi / 2) / sqrt(n), so a 95% interval is 2 * 1.96 * sd wide
    sigma, n = 20.0, 2000
    ttfts = np.random.default_rng(seed).normal(100.0, sigma, size=n)
    lo, hi = bootstrap_percentile_ci(ttfts)[50]
    expected = 2 * 1.96 * sigma * math.sqrt(math.pi / 2) / math.sqrt(n)  # 2.17 ms
    assert abs((hi - lo) - expected) <= 0.25 * expected
    assert lo <= float(np.median(ttfts)) <= hi


def test_bootstrap_is_reproducible_and_widens_toward_the_tail():
    x = np.random.default_rng(7).exponential(50.0, size=500)
    a, b = bootstrap_percentile_ci(x), bootstrap_percentile_ci(x)
    assert a == b  # fixed seed: the same requests give the same row
    widths = [a[p][1] - a[p][0] for p in (50, 90, 99)]
    assert widths[0] < widths[1] < widths[2]  # exponential: sparser data toward the tail


def test_bootstrap_of_identical_values_is_a_point():
    assert bootstrap_percentile_ci([42.0] * 50) == {50: (42.0, 42.0), 90: (42.0, 42.0), 99: (42.0, 42.0)}


def test_t_quantile_constant_by_numerical_integration():
    # density of Student's t with 9 degrees of freedom, integrated from 0 to the constant (Simpson, 2000 steps)
    df = 9
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    f = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731
    m, h = 2000, T_975_DF9 / 2000
    simpson = h / 3 * (f(0) + f(T_975_DF9) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, m)))
    assert 0.5 + simpson == pytest.approx(0.975, abs=1e-9)


def test_batch_means_by_hand():
    # window 0..10 s, 10 one-second batches: 10 events in each of the first five, 20 in each of the last five
    times = np.concatenate([np.linspace(b + 0.05, b + 0.95, 10 if b < 5 else 20) for b in range(10)]) * 1e9
    lo, hi = batch_means_ci(times.astype(np.int64), None, 0, 10 * 10**9)
    # batch rates 10 x5, 20 x5 per s: mean 15, sd = sqrt(10 * 25 / 9) = 5.2705, half = 2.26216 * 5.2705 / sqrt(10)
    half = 2.2621571627 * math.sqrt(250 / 9) / math.sqrt(10)
    assert (lo, hi) == (pytest.approx(15 - half), pytest.approx(15 + half))
    assert half == pytest.approx(3.7703, abs=1e-4)


def test_batch_means_bins_are_half_open_but_the_last_and_events_outside_are_dropped():
    # events at 0, 1, ..., 10 s and two outside the 0..10 s window: batch b holds [b, b + 1) s, the last one
    # [9, 10] s closed, so the counts are 1 x9 and 2 (9 s and 10 s); rates per s: mean 1.1, sd (ddof 1)
    # sqrt((9 * 0.01 + 0.81) / 9) = sqrt(0.1), half = t sqrt(0.1) / sqrt(10) = t / 10
    times = np.array([-1, *range(11), 10.5]) * 10**9
    lo, hi = batch_means_ci(times.astype(np.int64), None, 0, 10 * 10**9)
    assert (lo, hi) == (pytest.approx(1.1 - 0.22621571627), pytest.approx(1.1 + 0.22621571627))


def test_batch_means_weights_are_tokens():
    times = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5]) * 1e9
    lo, hi = batch_means_ci(times, np.full(10, 3.0), 0, 10 * 10**9)  # 3 tokens per second in every batch
    assert lo == pytest.approx(3.0) and hi == pytest.approx(3.0)


def test_constant_rate_stream_gives_a_narrow_throughput_interval():
    row = summarize(stream(500, lambda i: 10))  # 100 tok/s for 500 x 100 ms
    rate = row["output_tok_s"]
    assert rate == pytest.approx(100.0, rel=0.02)
    assert row["output_tok_s_ci_lo"] <= rate <= row["output_tok_s_ci_hi"]
    assert row["output_tok_s_ci_hi"] - row["output_tok_s_ci_lo"] < 0.01 * rate
    assert row["request_throughput_ci_lo"] <= row["request_throughput"] <= row["request_throughput_ci_hi"]


def test_rate_halving_mid_window_gives_a_wide_throughput_interval():
    # 250 requests of 10 tokens in 10 + 9 x 10 = 100 ms (100 tok/s, 25 s), then 250 in 10 + 9 x 20 = 190 ms
    # (52.6 tok/s, 47.5 s): the rate roughly halves a third of the way in
    row = summarize(stream(500, lambda i: 10 if i < 250 else 20))
    rate = row["output_tok_s"]
    assert rate == pytest.approx(5000 / 72.5)  # 5000 tokens over 72.5 s
    lo, hi = row["output_tok_s_ci_lo"], row["output_tok_s_ci_hi"]
    # batches of 7.25 s: rates 100 x3, one mixed, 52.6 x6 -> sd ~ 24, half-width ~ 17 tok/s
    assert hi - lo > 0.3 * rate
    assert lo <= rate <= hi
    # the batch means are the row's rate: the interval is centred on it
    assert (lo + hi) / 2 == pytest.approx(rate, rel=1e-9)
    assert (row["total_tok_s_ci_lo"] + row["total_tok_s_ci_hi"]) / 2 == pytest.approx(row["total_tok_s"], rel=1e-9)


def test_fewer_than_ten_requests_give_no_interval():
    assert bootstrap_percentile_ci([1.0] * 9) is None
    assert bootstrap_percentile_ci([1.0] * 10) is not None
    row = summarize(stream(9, lambda i: 10))
    assert all(row[k] is None for k in empty_ci_columns())
    row10 = summarize(stream(10, lambda i: 10))
    assert all(row10[k] is not None for k in empty_ci_columns())


def test_interval_columns_are_declared_and_valid_rows():
    cols = empty_ci_columns()
    assert len(cols) == 2 * (3 + 3 * 3) and set(cols) <= set(SCHEMA)
    assert "ttft_ms_p50_ci_lo" in cols and "output_tok_s_ci_hi" in cols
    row = summarize(stream(40, lambda i: 10 + i % 3))
    validate_row(row)
    for f in ci_figures():
        assert row[f"{f}_ci_lo"] <= row[f] + 1e-9 and row[f] <= row[f"{f}_ci_hi"] + 1e-9, f
    off = offline_summary(10.0, 100, 100, 1000, 1000)
    assert all(off[k] is None for k in cols)


def test_batch_means_lower_end_clips_at_zero():
    # all 10 events in the first of ten 1-s batches: rates 10, 0 x9 -> mean 1, sd = sqrt((81 + 9) / 9) = sqrt(10),
    # half = 2.26216 * sqrt(10) / sqrt(10) = 2.26216 -> [-1.26, 3.26], the lower end clipped to 0
    lo, hi = batch_means_ci(np.linspace(0.1, 0.9, 10) * 1e9, None, 0, 10 * 10**9)
    assert lo == 0.0 and hi == pytest.approx(1 + 2.2621571627)
