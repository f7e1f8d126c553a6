"""A GPU listed under pending_gpus (no checked HBM figures yet) and a GPU without any cost tier: `plan` and
`cost` answer with one line and exit 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import base

runner = CliRunner()
PLAN = ["plan", "--model", "glm-5.2", "--count", "8", "--quant", "fp8", "--isl", "8192", "--osl", "1024"]


# The shipped pending_gpus section is empty since the 2026 fleet got its figures (configs/hardware.yaml);
# a pending entry in the user's own hardware.yaml (--config-dir) is refused the same way.
PENDING_YAML = """pending_gpus:
  mi450x:
    name: MI450X (announced)
    notes: no datasheet yet for HBM capacity or bandwidth
"""


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "hardware.yaml").write_text(PENDING_YAML)
    yield str(tmp_path)
    base.set_user_config_dir(None)  # the CLI's --config-dir sets a process-wide directory


def test_plan_on_a_pending_gpu_is_one_line(config_dir):
    r = runner.invoke(app, ["--config-dir", config_dir, *PLAN, "--gpu", "mi450x"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "pending_gpus" in lines[0] and "mi450x" in lines[0]


def test_cost_on_a_pending_gpu_is_one_line(config_dir):
    r = runner.invoke(app, ["--config-dir", config_dir, "cost", "--gpu", "mi450x", "--tier", "owning-neocloud",
                            "--output-tok-s-per-gpu", "1000"])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "pending_gpus" in r.output


def test_plan_on_a_gpu_without_cost_tiers_is_one_line():
    r = runner.invoke(app, [*PLAN, "--gpu", "ascend-910b"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == ["error: tier: gpu 'ascend-910b' has no cost tiers; "
                                             "allowed: give --usd-per-gpu-hour"]
