"""Issue 25, item 5: a sweep above the point budget (bench.sweep.run.POINT_BUDGET, 2,000) needs
--allow-large-sweep: without it `run` is one line naming the count and the flag, exit 2, nothing written;
the count of a sweep that runs is printed before it starts."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.sweep import Sweep
from bench.sim import SimConfig, run_sim_in_thread
from bench.sweep.run import POINT_BUDGET, check_point_budget
from tests.unit.cli.bad_sweeps import sweep_with


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _sweep(concurrency: list[int], workloads: int = 1, dtypes: tuple[str, ...] = ("bfloat16",)) -> Sweep:
    return Sweep(name="big", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                 hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
                 server={"model": "glm-4.5-tiny", "dtype": list(dtypes)}, load={"concurrency": concurrency},
                 workloads=[{"name": f"w{i}", "input_len": 8, "output_len": 4} for i in range(workloads)])


def test_the_count_is_the_product_of_the_axes():
    sweep = _sweep(list(range(1, 11)), workloads=3, dtypes=("bfloat16", "float32"))
    assert check_point_budget(sweep, allow_large=False) == 2 * 3 * 10 == len(sweep.points())


def test_the_budget_itself_runs_and_one_more_point_needs_the_flag():
    assert POINT_BUDGET == 2000
    assert check_point_budget(_sweep(list(range(1, 1001)), workloads=2), allow_large=False) == 2000
    big = _sweep(list(range(1, 1001)), workloads=2, dtypes=("bfloat16", "float32"))
    assert check_point_budget(big, allow_large=True) == 4000


def test_run_above_the_budget_is_one_line_naming_the_count_and_the_flag(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(sweep_with(load__concurrency=list(range(1, 2002)))))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = _lines(r.stderr)
    assert len(lines) == 1 and "2,001 points" in lines[0] and "--allow-large-sweep" in lines[0], lines
    assert not out.exists() or list(out.rglob("*")) == []


def test_the_point_count_is_printed_before_the_run_starts(tmp_path):
    with run_sim_in_thread(SimConfig(ttft_ms=1, itl_ms=1)) as url:
        cfg = tmp_path / "sweep.yaml"
        cfg.write_text(yaml.safe_dump({
            "name": "tiny", "engine": {"kind": "openai", "base_url": url, "ignore_eos": True},
            "hardware": {"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, "server": {"model": "glm-4.5-tiny"},
            "load": {"concurrency": [1, 2], "num_requests": 2, "warmup_requests": 0},
            "workloads": [{"name": "w", "input_len": 8, "output_len": 4}]}))
        r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    assert _lines(r.stderr)[0] == "tiny: 2 point(s)"
