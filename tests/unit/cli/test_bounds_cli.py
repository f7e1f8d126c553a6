"""Inputs that pass the type check but mean nothing (issue 24, item 5): each one exits 2 with one line
naming the field and the allowed range (bench.econ.bounds), never a number computed from it."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import base as cfgmod

M = ["margin", "--price", "glm-4.5-air@zai", "--gpu", "h100"]
P = ["plan", "--gpu", "h200", "--output-tok-s-per-gpu", "1000", "--price", "glm-4.6@zai"]

# (argv, the fragment the one error line must hold: field and allowed range)
CASES = [
    ([*M, "--output-tok-s-per-gpu", "1e308"], "--output-tok-s-per-gpu: must be in [0.001, 1e+06] (got 1e+308)"),
    ([*M, "--output-tok-s-per-gpu", "1e-300"], "--output-tok-s-per-gpu: must be in [0.001, 1e+06] (got 1e-300)"),
    ([*M, "--total-tok-s-per-gpu", "1e308"], "--total-tok-s-per-gpu: must be in [0.001, 1e+07]"),
    ([*M, "--output-tok-s-per-gpu", "1000", "--input-tokens", "1e308"], "--input-tokens: must be in [0, 1e+07]"),
    (["margin", "--price", "glm-4.5-air@zai", "--usd-per-gpu-hour", "1e-320", "--output-tok-s-per-gpu", "1000"],
     "--usd-per-gpu-hour: must be in [0.001, 1000]"),
    ([*M, "--output-tok-s-per-gpu", "1000", "--requests-sigma", "1000", "--subscription-fee", "10",
      "--requests-per-month", "100"], "--requests-sigma: must be in [0, 5] (got 1000)"),
    ([*M, "--output-tok-s-per-gpu", "1000", "--years", "1000"], "--years: must be a whole number in [0, 30]"),
    ([*M, "--output-tok-s-per-gpu", "1000", "--usd-per-cny", "7.1"], "--usd-per-cny: must be in [0.05, 1] (got 7.1)"),
    ([*M, "--output-tok-s-per-gpu", "1000", "--output-tokens-sigma", "9"], "--output-tokens-sigma: must be in [0, 3]"),
    (["cost", "--gpu", "h20", "--tier", "tco", "--output-tok-s-per-gpu", "1000", "--pue", "0.5"],
     "--pue: must be in [1, 3] (got 0.5)"),
    (["cost", "--gpu", "h100", "--output-tok-s-per-gpu", "1e308"], "--output-tok-s-per-gpu: must be in [0.001"),
    ([*P, "--tokens-per-day", "1e300"], "--tokens-per-day: must be in [1, 1e+15] (got 1e+300)"),
    (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--utilization", "1e-9"],
     "--utilization: must be in [0.001, 1] (got 1e-09)"),
    (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--isl", "1e308"],
     "--isl: must be in [0, 1e+07] (got 1e+308)"),
    (["report", "results/none", "--usd-per-cny", "-1"], "--usd-per-cny: must be in [0.05, 1] (got -1)"),
]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(c[0][-2:]) for c in CASES])
def test_meaningless_input_is_one_line_exit_2(args, fragment):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert r.stdout.strip() == "" and "Traceback" not in r.output and "overflow" not in r.output


def test_absurd_price_in_a_price_file_is_refused_when_used(tmp_path, monkeypatch):
    text = (cfgmod.CONFIG_DIR / "prices.yaml").read_text().replace(
        "    input_per_m: 0.20\n    cached_input_per_m: 0.03\n    output_per_m: 1.10",
        "    input_per_m: 0.20\n    cached_input_per_m: 0.03\n    output_per_m: 1.0e300", 1)
    assert "1.0e300" in text
    (tmp_path / "prices.yaml").write_text(text)
    shutil.copy(cfgmod.CONFIG_DIR / "hardware.yaml", tmp_path / "hardware.yaml")
    monkeypatch.setattr(cfgmod, "CONFIG_DIR", tmp_path)
    r = CliRunner().invoke(app, [*M, "--output-tok-s-per-gpu", "1000"])
    assert r.exit_code == 2, r.output
    assert "price output_per_m (in USD per M): must be in [0, 1000] (got 1e+300)" in r.stderr


def test_sane_extremes_still_pass():
    # the edges of each range are allowed: 1e6 output tok/s, 1 cent of $/GPU-hour... a result, exit 0
    r = CliRunner().invoke(app, [*M, "--output-tok-s-per-gpu", "1e6", "--years", "30", "--json"])
    assert r.exit_code == 0, r.output
