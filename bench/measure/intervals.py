"""95% confidence intervals of a point's figures: the formulas `metrics.summarize` calls.

Two methods, one per kind of figure (docs/metrics.md says why):

- Latency percentiles (p50/p90/p99 of TTFT, TPOT, E2EL): percentile bootstrap over requests. A
  percentile has no simple variance formula (its asymptotic variance needs the density at the
  percentile, which is unknown), while the requests of a point are close to exchangeable samples, so
  resampling them with replacement B times and reading the 2.5th and 97.5th percentile of the B
  resampled percentiles gives the interval without a model. The seed is fixed, so a row is reproducible.
- Throughputs (output tok/s, total tok/s, request/s): batch means over time. The tokens of one window
  are autocorrelated (one batch of in-flight requests streams them together, a slow step delays all of
  them), so the variance of the rate is not that of independent events. Split the measured window into
  k equal batches, take each batch's rate; when batches are long compared to the correlation time their
  rates are close to independent, and the interval is mean +- t(0.975, k-1) * sd / sqrt(k). The mean
  of the batch rates is the window's rate, so the interval is centred on the row's figure.

Fewer than MIN_REQUESTS measured requests give no interval (None): a bootstrap of 5 requests cannot
reach the tails (p99 is always the maximum) and 10 batches would hold under one request each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.units import NS_PER_S

CI_LEVEL = 0.95
MIN_REQUESTS = 10
BOOTSTRAP_B = (200, 1000)  # resamples: 1000 for small points, fewer (never under 200) as n grows
BOOTSTRAP_SEED = 27  # fixed: the same requests give the same interval on every read
BATCHES = 10  # k of batch means (>= 5; 10 keeps t small and batches long)
T_975_DF9 = 2.2621571627409915  # Student's t, 97.5th percentile, k - 1 = 9 degrees of freedom
CI_PERCENTILES = (50, 90, 99)
CI_LATENCIES = ("ttft_ms", "tpot_ms", "e2el_ms")
CI_RATES = ("output_tok_s", "total_tok_s", "request_throughput")
_MAX_CELLS = 4_000_000  # resampled values held at once (32 MB of float64): bounds memory at 100k requests

Interval = tuple[float, float]


def ci_figures() -> list[str]:
    """Every figure that carries an interval; its columns are `<figure>_ci_lo` and `<figure>_ci_hi`."""
    return [*CI_RATES, *(f"{m}_p{p}" for m in CI_LATENCIES for p in CI_PERCENTILES)]


def empty_ci_columns() -> dict[str, None]:
    return {f"{f}_ci_{end}": None for f in ci_figures() for end in ("lo", "hi")}


def bootstrap_percentile_ci(samples: Sequence[float] | np.ndarray, percentiles: Sequence[float] = CI_PERCENTILES,
                            b: int | None = None, seed: int = BOOTSTRAP_SEED,
                            level: float = CI_LEVEL) -> dict[float, Interval] | None:
    """Percentile-bootstrap interval of each percentile of `samples` (linear interpolation, as the rows);
    None for fewer than MIN_REQUESTS samples. `b` resamples; by default 1000, down to 200 past 4000 samples so
    that B * n stays near 4e6 (the 95% bounds of B = 200 move by a few percent of the width between seeds).

    Vectorized: each block of resamples is one (rows, n) index matrix and one np.percentile along axis 1;
    blocks keep at most _MAX_CELLS values in memory and draw from one generator, so the result does not
    depend on the block size.
    """
    arr = np.asarray(samples, dtype=float)
    n = arr.size
    if n < MIN_REQUESTS:
        return None
    if b is None:
        b = min(BOOTSTRAP_B[1], max(BOOTSTRAP_B[0], _MAX_CELLS // n))
    rng = np.random.default_rng(seed)
    stats = np.empty((len(percentiles), b))
    step = max(1, _MAX_CELLS // n)
    for s in range(0, b, step):
        rows = min(step, b - s)
        idx = rng.integers(0, n, size=(rows, n))
        stats[:, s:s + rows] = np.percentile(arr[idx], percentiles, axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail], axis=1)
    return {p: (float(a), float(z)) for p, a, z in zip(percentiles, lo, hi, strict=True)}


def batch_means_ci(times_ns: np.ndarray, weights: np.ndarray | None, start_ns: int, end_ns: int,
                   k: int = BATCHES) -> Interval:
    """Batch-means interval of the rate of events (weight each: tokens, or 1 per request) in
    [start_ns, end_ns]: k equal batches, t(0.975, k - 1) on the batch rates' standard error, the lower end
    clipped at 0. It assumes batches longer than the rate's correlation time: a window of a few request
    lifetimes (48 requests at concurrency 32 is ~2 waves) gives a wide interval, which is the honest answer."""
    if k != BATCHES:  # pragma: no cover - the t quantile below is for k = BATCHES
        raise ValueError(f"batch_means_ci: k must be {BATCHES}")
    duration_s = max(end_ns - start_ns, 1) / NS_PER_S
    # k equal bins given as (k, range): numpy's uniform-bin path, no sort (load.until runs this on the event
    # loop between rounds); the same edges (linspace) and the same closed last bin as explicit edges
    counts, _ = np.histogram(np.asarray(times_ns, dtype=float), bins=k, range=(float(start_ns), float(end_ns)),
                             weights=weights)
    rates = counts / (duration_s / k)
    mean = float(rates.mean())
    half = T_975_DF9 * float(rates.std(ddof=1)) / float(np.sqrt(k))
    return max(mean - half, 0.0), mean + half  # a rate is never negative: a noisy short window clips at 0


def latency_ci_columns(samples: dict[str, Sequence[float]]) -> dict[str, float | None]:
    """`<metric>_p<P>_ci_lo/hi` for each metric of CI_LATENCIES in `samples` (None below MIN_REQUESTS)."""
    out: dict[str, float | None] = {}
    for i, m in enumerate(CI_LATENCIES):
        ci = bootstrap_percentile_ci(samples.get(m, ()), seed=BOOTSTRAP_SEED + i)
        for p in CI_PERCENTILES:
            lo, hi = ci[p] if ci is not None else (None, None)
            out[f"{m}_p{p}_ci_lo"], out[f"{m}_p{p}_ci_hi"] = lo, hi
    return out


def rate_ci_columns(events: dict[str, tuple[np.ndarray, np.ndarray | None]], start_ns: int,
                    end_ns: int) -> dict[str, float | None]:
    """`<rate>_ci_lo/hi` for each rate of CI_RATES from its events (times in ns, weights or None = 1 each)."""
    out: dict[str, float | None] = {}
    for name in CI_RATES:
        times, weights = events[name]
        lo, hi = batch_means_ci(times, weights, start_ns, end_ns)
        out[f"{name}_ci_lo"], out[f"{name}_ci_hi"] = lo, hi
    return out
