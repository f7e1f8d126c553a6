"""A GPU listed under pending_gpus (no checked HBM figures yet) and a GPU without any cost tier: `plan` and
`cost` answer with one line and exit 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli.app import app

runner = CliRunner()
PLAN = ["plan", "--model", "glm-5.2", "--count", "8", "--quant", "fp8", "--isl", "8192", "--osl", "1024"]


@pytest.mark.parametrize("gpu", ["mi355x", "b300", "gb200-nvl72"])
def test_plan_on_a_pending_gpu_is_one_line(gpu):
    r = runner.invoke(app, [*PLAN, "--gpu", gpu])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "pending_gpus" in lines[0] and gpu in lines[0]


def test_cost_on_a_pending_gpu_is_one_line():
    r = runner.invoke(app, ["cost", "--gpu", "gb300-nvl72", "--tier", "inferencex-assumed",
                            "--output-tok-s-per-gpu", "1000"])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "pending_gpus" in r.output


def test_plan_on_a_gpu_without_cost_tiers_is_one_line():
    r = runner.invoke(app, [*PLAN, "--gpu", "ascend-910b"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == ["error: tier: gpu 'ascend-910b' has no cost tiers; "
                                             "allowed: give --usd-per-gpu-hour"]
