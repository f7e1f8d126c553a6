"""On the real vLLM CPU engine: a warm prefix cache inflates a later point, and the default reset removes it.

Two points (concurrency 2, then 4) share their prompts on purpose: a `prefix` workload whose 16 requests use 8
shared 512-token prefixes round-robin (4 whole 128-token CPU blocks each) with a 16-token unique suffix, no
warm-up. On a cold cache each point misses each prefix once and hits it once: hits / queried tokens =
8 x 512 / (16 x 528) = 0.485. With `prefix_cache_between_points: keep` the second point finds all 8 prefixes
cached by the first: 16 x 512 / (16 x 528) = 0.970. With `reset` (the default) the harness empties the cache
before each point (vLLM's dev-mode POST /reset_prefix_cache), so the second point is as cold as the first.
Two server starts (one per policy); about 3 minutes on 2 cores.
"""

from __future__ import annotations

import pandas as pd
import pytest

from bench.config.sweep import Sweep
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results

pytestmark = pytest.mark.e2e

COLD = 8 * 512 / (16 * 528)  # 0.485: each prefix missed once, hit once
WARM = 16 * 512 / (16 * 528)  # 0.970: every prefix already cached


def test_keep_inflates_the_second_point_and_reset_keeps_it_cold(tmp_path):
    pytest.importorskip("vllm")
    sweep = Sweep(
        name="cache", engine={"kind": "vllm", "startup_timeout_s": 600},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
        server={"model": "glm-4.5-tiny", "max_model_len": 2048, "max_num_seqs": 8, "enable_prefix_caching": True,
                "prefix_cache_between_points": ["keep", "reset"]},
        load={"concurrency": [2, 4], "num_requests": 16, "warmup_requests": 0, "timeout_s": 120},
        workloads=[{"name": "shared", "kind": "prefix", "prefix_len": 512, "input_len": 16, "output_len": 8,
                    "num_prefixes": 8, "reuse_ratio": 1.0}],
    )
    summary = run_sweep(sweep, out_root=tmp_path)
    df = load_results(summary.run_dir)
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    by = {(r.prefix_cache_between_points, r.concurrency): r for r in df.itertuples()}
    keep1, keep2, reset1, reset2 = by["keep", 2], by["keep", 4], by["reset", 2], by["reset", 4]
    for r in (keep1, keep2, reset1, reset2):
        print(f"{r.prefix_cache_between_points} c={r.concurrency}: hit rate {r.prefix_cache_hit_rate:.3f}, "
              f"cached frac {r.cached_input_frac:.3f}, total {r.total_tok_s:.0f} tok/s, "
              f"TTFT p50 {r.ttft_ms_p50:.0f} ms")
    # The hand values hold when every request finds what an earlier one cached and nothing else. On the real
    # engine the order of concurrent requests moves a few blocks either way (a CI run read 0.561 for a cold
    # first point), so the cold points are checked against the hand value within 0.1 and the policies against
    # each other: keep must be near-fully warm, reset must be as cold as its own first point.
    for cold in (keep1, reset1, reset2):
        assert cold.prefix_cache_hit_rate == pytest.approx(COLD, abs=0.1)
    assert keep2.prefix_cache_hit_rate == pytest.approx(WARM, abs=0.03)
    assert keep2.prefix_cache_hit_rate - reset2.prefix_cache_hit_rate > 0.3  # reset removed the inflation
    assert abs(reset2.prefix_cache_hit_rate - reset1.prefix_cache_hit_rate) < 0.1
    assert reset1.prefix_cache_reset and reset2.prefix_cache_reset
    assert pd.isna(keep2.prefix_cache_reset)  # keep: no reset was tried
    # The requests' own usage (cached_tokens) is per request and exact; the server's counters are scraped around
    # the point and agree with it closely but not exactly (a CI run read 0.539 on the counters where the usage said
    # 0.485 for the reset point: the scrape window and the engine's stats flush are not the same instant). So the
    # usage must say the same thing about the policies, and the counters must agree with it within 0.1.
    assert keep2.cached_input_frac == pytest.approx(WARM, abs=0.03)
    assert reset2.cached_input_frac == pytest.approx(COLD, abs=0.1)
    assert keep2.cached_input_frac - reset2.cached_input_frac > 0.3
    for r in (keep1, keep2, reset1, reset2):
        assert r.cached_input_frac == pytest.approx(r.prefix_cache_hit_rate, abs=0.1)
