"""The scheduler simulation against the real engine, small: calibrate the step model on 3 points measured on
the session's vLLM server (CPU build), then predict 2 points the calibration never saw (another length at a
concurrency it did not see, and an open-loop request rate) and measure them.

The full check (14 held-out points, goal 1.25x) is scripts/check_scheduler_cpu.py, its table in
docs/planner.md. Here the samples are 16-24 requests on a shared 2-core CI box, where a calibration on 3 such
points moved the predicted TPOT by up to 1.8x between runs, so the bound is 2x: it still fails when the
simulation misses queueing or chunking (the closed form's TTFT was 4-20x off)."""

from __future__ import annotations

import pytest

from bench.config import base
from bench.config.sweep import Sweep
from bench.econ.row_cost import ROW_PRICING
from bench.engines.vllm_server import SERVED_MODEL_NAME
from bench.planner import calibrate, virtual  # noqa: F401 - virtual registers its engine kind
from bench.sweep.run import run_sweep
from bench.sweep.store import load_requests, load_results

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOUND = 2.0
CALIB = [{"name": "in256-out32", "input_len": 256, "output_len": 32},
         {"name": "in1024-out16", "input_len": 1024, "output_len": 16}]
HELD_OUT = [{"name": "in512-out24", "input_len": 512, "output_len": 24}]


def _sweep(engine: dict, load: dict, workloads: list[dict]) -> Sweep:
    return Sweep(name="sched-check", engine=engine, hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
                 server={"model": "glm-4.5-tiny", "max_model_len": 2048, "max_num_seqs": 32},
                 load={**load, "warmup_requests": 2}, workloads=workloads)


@pytest.fixture(scope="module")
def check(vllm_server, tmp_path_factory):
    real = {"kind": "openai", "base_url": vllm_server.base_url, "served_model_name": SERVED_MODEL_NAME,
            "ignore_eos": True}
    out = tmp_path_factory.mktemp("sched")
    calib = run_sweep(_sweep(real, {"concurrency": [2, 12], "num_requests": 16}, CALIB), out_root=out / "calib",
                      pricing=ROW_PRICING)
    rows = load_results(calib.run_dir)
    rows = rows[~((rows["workload"] == "in1024-out16") & (rows["concurrency"] == 12))].copy()  # 3 points fit
    rows["run_dir"] = str(calib.run_dir)  # for the per-request look in _merged
    merged_calib = [f"{r['workload']} c={r['concurrency']}" for _, r in rows.iterrows() if _merged(r)]
    fits = calibrate.calibrate(rows.drop(columns="run_dir"))
    cfg_dir = out / "config"
    cfg_dir.mkdir()
    calibrate.save_calibration(fits, path=cfg_dir / "roofline.yaml")
    held = {"concurrency": [6], "request_rate": [6.0], "num_requests": 24}
    measured_dir = run_sweep(_sweep(real, held, HELD_OUT), out_root=out / "real", pricing=ROW_PRICING).run_dir
    measured = load_results(measured_dir)
    measured["run_dir"] = str(measured_dir)  # for the per-request look in _merged
    base.set_user_config_dir(cfg_dir)
    try:
        predicted = load_results(run_sweep(_sweep({"kind": "virtual"}, held, HELD_OUT), out_root=out / "virtual",
                                           pricing=ROW_PRICING).run_dir)
    finally:
        base.set_user_config_dir(None)
    return fits, measured, predicted, merged_calib


def _skip_if_box_bound(merged_calib: list[str]) -> None:
    """A calibration point whose streams the loaded server merged measured the box, not the engine's steps
    (TTFT holds the decode, TPOT reads 0): the fit, and every prediction from it, has no truth to match. At
    load average 14 on the 2 cores a fit on points with most answers in few reads read rms 0.57. A skip, not a pass;
    the per-request stream checks of tests/e2e/test_vllm_e2e.py still fail a client that merges by itself."""
    if merged_calib:
        pytest.skip(f"calibration points {merged_calib} had their streams merged by a loaded server")


def test_calibration_reproduces_its_own_points(check):
    fits, _, _, merged_calib = check
    assert len(fits) == 1 and fits[0].key == "cpu-2core/bf16"
    _skip_if_box_bound(merged_calib)
    assert fits[0].rms_log_error < 0.35  # e^0.35 = 1.42: the fitted simulation explains what it was fitted on


@pytest.mark.parametrize("metric", ["ttft_ms_p50", "tpot_ms_p50", "output_tok_s"])
def test_held_out_points_within_the_bound(check, metric):
    _, measured, predicted, merged_calib = check
    assert (predicted["engine"] == "virtual").all() and (predicted["status"] == "ok").all()
    _skip_if_box_bound(merged_calib)
    compared = 0
    for load in ("concurrency", "request_rate"):
        row = measured[measured[load].notna()].iloc[0]
        if _merged(row) and metric != "output_tok_s":
            # the API server fell behind and handed most answers over in one read (vLLM merges undelivered
            # deltas; a loaded CI box did this at 6 req/s): TTFT then includes the decode and TPOT reads 0, so
            # the point measured the box, not the engine's step times; throughput is still counted right
            continue
        m, p = row[metric], predicted[predicted[load].notna()].iloc[0][metric]
        assert 1 / BOUND <= p / m <= BOUND, f"{metric} at {load}: predicted {p:.4g}, measured {m:.4g}"
        compared += 1
    if not compared:
        pytest.skip("every held-out point had its streams merged by a loaded server: nothing to compare")


def _merged(row) -> bool:
    """Most measured requests came in one read: whole answers merged by the loaded server, so TTFT holds the
    decode and TPOT reads 0. Reads are distinct chunk timestamps (the events of one read share its stamp). Bursts
    of a few reads are normal for vLLM on CPU and leave TTFT and TPOT measured (a calibration point at c=2 here
    came in 1-25 reads of 32 tokens, 5 of 16 requests in one, TPOT p50 3.4 ms): those are compared."""
    req = load_requests(row["run_dir"], row["point_id"])
    meas = req[~req["warmup"] & ~req["cooldown"]]
    return bool((meas["chunk_ns"].map(lambda c: len(set(c))) == 1).mean() > 0.5)
