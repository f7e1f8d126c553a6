"""The 2026 fleet in the planner: efficiencies inherited from a measured GPU (configs/hardware.yaml
`efficiency_from`), said in the estimate's notes and widening its error band; `plan` on the new GPUs; a GPU
without a cost tier refused with one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.planner.efficiency import Curves
from bench.planner.factors import (
    INHERITED_BAND_FACTOR,
    CalibratedEntry,
    ErrorBand,
    PlannerFit,
    RooflineConfig,
    efficiency_for,
    load_roofline_config,
)

runner = CliRunner()
PLAN = ["plan", "--model", "glm-4.5-air", "--count", "1", "--quant", "fp8", "--isl", "1024", "--osl", "128",
        "--concurrency", "1", "--concurrency", "4"]


def _curves(tag: str) -> Curves:
    return Curves(hbm_gb_s=5300, dense_bw=[(1, 0.5)], expert_bw=[(1, 0.4)], attention_bw_max=0.9,
                  attention_latency_us=9, source=tag)


def test_b300_inherits_b200s_blackwell_settings():
    eff, _ = efficiency_for("b300", "fp8")
    assert eff.inherited_from == "b200"
    # configs/roofline.yaml per_gpu.b200: FlashMLA-sparse pads to 128 heads on Blackwell (64 on Hopper)
    assert eff.sparse_mla_min_heads == 128
    # B200 has no measured curves: the HBM rule on B300's own 7.7 TB/s, above H200's 4.8 -> H200's curves
    assert eff.curves_source == "inherited:b200 (nearest:h200 by the HBM rule)"


def test_a_measured_parent_lends_its_curves_and_calibration():
    base = load_roofline_config()
    cal = CalibratedEntry(bandwidth_efficiency=0.7, compute_efficiency=0.3, step_overhead_ms=2.5, n_points=4,
                          rms_log_error=0.1)
    cfg = base.model_copy(update={"kernel_curves": {**base.kernel_curves, "mi300x": _curves("mi300x probe")},
                                  "calibrated": {"mi300x/fp8": cal}})
    eff, source = efficiency_for("mi355x", "fp8", cfg)
    assert eff.inherited_from == "mi300x" and source == "calibrated:mi300x/fp8 (inherited)"
    assert (eff.bandwidth_efficiency, eff.compute_efficiency, eff.step_overhead_ms) == (0.7, 0.3, 2.5)
    assert eff.curves.source == "mi300x probe" and eff.curves_source == "inherited:mi300x (measured:mi300x)"


def test_a_gpu_measured_itself_inherits_nothing():
    base = load_roofline_config()
    cal = CalibratedEntry(bandwidth_efficiency=0.9, compute_efficiency=0.5, step_overhead_ms=1.0, n_points=3,
                          rms_log_error=0.1)
    cfg = base.model_copy(update={"calibrated": {"mi355x/fp8": cal}})
    eff, source = efficiency_for("mi355x", "fp8", cfg)
    assert eff.inherited_from is None and source == "calibrated:mi355x/fp8"
    h200, _ = efficiency_for("h200", "fp8")
    assert h200.inherited_from is None and h200.curves_source == "measured:h200"


def test_inherited_band_is_the_fitted_band_widened():
    band = {"output_tok_s": ErrorBand(n_points=8, median_ratio=1.0, worst_ratio=1.5, typical_factor=1.2,
                                      worst_factor=1.5),
            "tpot_ms": ErrorBand(n_points=8, median_ratio=1.0, worst_ratio=2.0, typical_factor=1.1, worst_factor=2.0)}
    fit = PlannerFit(params={}, band=band)
    assert "x1.20 (worst x1.50)" in fit.band_text()
    text = fit.band_text("b200")
    # 1.2 x 1.35 = 1.62, 1.5 x 1.35 = 2.025, 1.1 x 1.35 = 1.485, 2.0 x 1.35 = 2.70
    assert INHERITED_BAND_FACTOR == 1.35
    assert "x1.62 (worst x2.02)" in text or "x1.62 (worst x2.03)" in text
    assert "TPOT x1.49 (worst x2.70)" in text or "TPOT x1.48 (worst x2.70)" in text
    assert "inherited from B200" in text


def test_plan_on_mi355x_works_and_says_inherited():
    r = runner.invoke(app, [*PLAN, "--gpu", "mi355x", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)["estimate"]
    assert out["gpu"] == "mi355x" and out["efficiency"]["inherited_from"] == "mi300x"
    assert any("efficiencies inherited from MI300X: never measured on MI355X" in n for n in out["notes"])
    assert "widened x1.35" in out["error_band"]
    # priced at the default tier: InferenceX costn for MI355X (July-2026 constants)
    assert (out["tier"], out["usd_per_gpu_hour"]) == ("owning-neocloud", 2.09)


@pytest.mark.parametrize("gpu", ["b300", "gb200-nvl72", "gb300-nvl72", "mi325x"])
def test_plan_accepts_the_other_new_gpus(gpu):
    r = runner.invoke(app, [*PLAN, "--gpu", gpu, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["estimate"]["efficiency"]["inherited_from"] in ("b200", "mi300x")


def test_plan_on_a_gpu_without_cost_tier_is_one_line():
    r = runner.invoke(app, [*PLAN, "--gpu", "ascend-910c"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "ascend-910c" in lines[0] and "--usd-per-gpu-hour" in lines[0]


def test_roofline_config_still_loads_without_inheritance_fields():
    # RooflineConfig is untouched by the catalog's efficiency_from (it stays hardware data)
    assert "efficiency_from" not in RooflineConfig.model_fields
