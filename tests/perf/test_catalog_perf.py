"""Catalog and comparison-page speed (pytest-benchmark; `make perf`), on generated runs.

- A catalog of 2,000 runs x 50 points (100,000 points): listing the runs, and a filtered
  cheapest-under-SLO query, each with the index up to date (the goal: under 1 s each); the cold index
  build and the one-new-run update are recorded too (extra_info).
- The comparison page over 10,000 points in headless Chromium: time to first paint and the re-render
  after a filter, measured with performance.now() inside the page (window.compareTimings) and reported
  in extra_info and on stdout (`-s`).

The generated points are plausible, not measured: only the columns the catalog and the page read are
filled (the rest stay null, as a failed probe leaves them).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.report.catalog import index_root, list_runs, load_catalog
from bench.report.catalog_query import CatalogPricing, run_query
from bench.report.compare import build_compare
from tests.integration.report.test_report_browser import chromium  # noqa: F401 (the fixture)

N_RUNS, N_POINTS = 2000, 50
PAGE_RUNS = 200  # x 50 = the 10,000 points of the page
MODELS = ("glm-4.5", "glm-4.5-air", "glm-5", "minimax-m2")
GPUS = {"h100": 2.0, "h200": 3.0, "b200": 5.0}
QUANTS = ("none", "fp8", "awq")
CHEAPEST_SQL = ("SELECT run_id, point_id, model, gpu_type, quantization, cost_usd_per_m_output_tokens, gross_margin "
                "FROM points WHERE model = 'glm-5' AND gpu_type = 'h200' AND status = 'ok' "
                "AND ttft_ms_p90 <= 500 AND tpot_ms_p90 <= 30 ORDER BY cost_usd_per_m_output_tokens LIMIT 1")


def _write_run(root: Path, i: int, rng: random.Random) -> None:
    d = root / f"sweep-{i % 20:02d}" / f"run-{i:05d}"
    d.mkdir(parents=True)
    model, gpu = MODELS[i % len(MODELS)], list(GPUS)[i % len(GPUS)]
    (d / "sweep.yaml").write_text(f"name: sweep-{i % 20:02d}\n")
    n = N_POINTS
    conc = [2 ** (j % 9) for j in range(n)]
    tok = [rng.uniform(50, 4000) for _ in range(n)]
    tpot = [rng.uniform(5, 150) for _ in range(n)]
    cols = {
        "run_id": [d.name] * n, "point_id": [f"p{i}-{j}" for j in range(n)], "point_index": list(range(n)),
        "status": ["ok" if j % 25 else "failed" for j in range(n)], "model": [model] * n,
        "engine": ["virtual" if i % 10 == 0 else "vllm"] * n, "quantization": [QUANTS[i % 3]] * n,
        "dtype": ["bfloat16"] * n, "gpu_type": [gpu] * n, "gpu_count": [1] * n, "usd_per_gpu_hour": [GPUS[gpu]] * n,
        "workload": [f"chat-{j % 3}" for j in range(n)], "concurrency": conc, "completed": [100] * n,
        "input_tokens": [200_000] * n, "output_tokens": [50_000] * n, "output_tok_s_per_gpu": tok,
        "interactivity_tok_s_user": [1000 / (t * 0.9) for t in tpot], "tpot_ms_p50": [t * 0.9 for t in tpot],
        "tpot_ms_p90": tpot, "ttft_ms_p90": [rng.uniform(50, 4000) for _ in range(n)],
        "started_at": [f"2026-11-{1 + i % 28:02d}T00:00:00Z"] * n,
    }
    pq.write_table(pa.table(cols), d / "points.parquet")


def _generate(root: Path, runs: int) -> Path:
    rng = random.Random(2026)
    for i in range(runs):
        _write_run(root, i, rng)
    return root


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    root = _generate(tmp_path_factory.mktemp("catalog") / "results", N_RUNS)
    t = time.perf_counter()
    ix = index_root(root)
    cold = time.perf_counter() - t
    assert ix.reread == N_RUNS and ix.rows == N_RUNS * N_POINTS
    return root, {"cold_index_build_s": cold}


def test_list_2000_runs(benchmark, big_root):
    root, info = big_root
    runs = benchmark(lambda: list_runs(load_catalog([root])))
    assert len(runs) == N_RUNS and sum(r["points_ok"] + r["points_failed"] for r in runs) == N_RUNS * N_POINTS
    benchmark.extra_info.update(info)
    print(f"\ncold index build, {N_RUNS} runs x {N_POINTS} points: {info['cold_index_build_s']:.2f} s")  # noqa: T201


def test_cheapest_under_slo_query_over_100k_points(benchmark, big_root):
    root, _ = big_root

    def query():  # noqa: ANN202
        return run_query(load_catalog([root]), CHEAPEST_SQL, CatalogPricing())

    res = benchmark(query)
    assert len(res.rows) == 1
    row = res.records()[0]
    assert (row["model"], row["gpu_type"]) == ("glm-5", "h200") and row["cost_usd_per_m_output_tokens"] > 0


def test_one_new_run_updates_the_index(benchmark, big_root):
    root, _ = big_root
    rng = random.Random(1)
    made = iter(range(N_RUNS, N_RUNS + 10_000))

    def add_and_index():  # noqa: ANN202
        _write_run(root, next(made), rng)
        return index_root(root)

    ix = benchmark.pedantic(add_and_index, rounds=3, iterations=1)
    assert ix.reread == 1


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    base = tmp_path_factory.mktemp("page")
    root = _generate(base / "results", PAGE_RUNS)
    t = time.perf_counter()
    res = build_compare([root], base / "out")
    return res.html_path, time.perf_counter() - t


def test_compare_page_10k_points_in_chromium(benchmark, page, chromium, tmp_path):  # noqa: F811
    from tests.integration.report.test_compare_browser import Chromium, drive, set_filter_js

    html, build_s = page
    steps = [set_filter_js("model", "glm-5"), set_filter_js("gpu", "h200"), set_filter_js("model", "")]

    def open_and_filter():  # noqa: ANN202
        browser = Chromium(chromium, tmp_path / f"profile-{time.monotonic_ns()}")
        try:
            return asyncio.run(asyncio.wait_for(drive(browser.port, html.as_uri(), steps), 300))
        finally:
            browser.stop()

    states, errors, _ = benchmark.pedantic(open_and_filter, rounds=1, iterations=1)
    assert errors == []
    t = states[-1]["timings"]
    assert states[0]["count"].startswith(f"{PAGE_RUNS * N_POINTS * 24 // 25} of ")  # every ok point is on the page
    info = {"page_build_s": round(build_s, 3), "page_bytes": html.stat().st_size,
            "first_render_done_ms": round(t["first_render_done_ms"], 1),
            "first_paint_ms": round(t["first_paint_ms"], 1),
            "first_contentful_paint_ms": t.get("first_contentful_paint_ms"),
            **{f"filter{i}_{r['why']}_to_paint_ms": round(r["to_paint_ms"], 1) for i, r in enumerate(t["renders"])}}
    benchmark.extra_info.update(info)
    print(f"\ncompare page, {PAGE_RUNS * N_POINTS} points: {info}")  # noqa: T201
