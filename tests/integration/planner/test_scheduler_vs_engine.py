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
    rows = rows[~((rows["workload"] == "in1024-out16") & (rows["concurrency"] == 12))]  # 3 points fit
    fits = calibrate.calibrate(rows)
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
    return fits, measured, predicted


def test_calibration_reproduces_its_own_points(check):
    fits, _, _ = check
    assert len(fits) == 1 and fits[0].key == "cpu-2core/bf16"
    assert fits[0].rms_log_error < 0.35  # e^0.35 = 1.42: the fitted simulation explains what it was fitted on


@pytest.mark.parametrize("metric", ["ttft_ms_p50", "tpot_ms_p50", "output_tok_s"])
def test_held_out_points_within_the_bound(check, metric):
    _, measured, predicted = check
    assert (predicted["engine"] == "virtual").all() and (predicted["status"] == "ok").all()
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
    assert compared >= 1, "every held-out point had its streams merged: nothing to compare"


def _merged(row) -> bool:
    """Most measured requests arrived in far fewer reads than tokens (median chunks < half the output)."""
    req = load_requests(row["run_dir"], row["point_id"])
    meas = req[~req["warmup"] & ~req["cooldown"]]
    return bool((meas["num_chunks"] < meas["output_tokens"] / 2).mean() > 0.5)
