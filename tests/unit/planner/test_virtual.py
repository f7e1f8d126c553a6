"""The virtual engine: a sweep on a GPU that is not at hand, through the scheduler simulation."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.planner import virtual  # noqa: F401 - registers the kind
from bench.report.data import headline_caveats
from bench.sweep.store import load_results

SWEEP = {
    "name": "virt",
    "engine": {"kind": "virtual", "max_queue": 40},
    "hardware": {"gpu": "h200", "count": 8, "tier": "owning-neocloud"},
    "server": {"model": "glm-5.2", "quantization": "fp8", "max_model_len": 9216, "tensor_parallel_size": 8,
               "max_num_seqs": 64},
    "load": {"concurrency": [4], "request_rate": [10_000.0], "num_requests": 200, "warmup_requests": 0},
    "workloads": [{"name": "w", "kind": "fixed", "input_len": 8192, "output_len": 32}],
}


def _run(tmp_path, sweep: dict) -> tuple[int, str]:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(sweep))
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(tmp_path / "out")])
    return r.exit_code, r.output  # stdout and stderr together


def test_a_saturated_point_says_so_and_the_sweep_goes_on(tmp_path):
    code, out = _run(tmp_path, SWEEP)
    assert code == 1, out  # a failed point: exit 1, as for a real engine
    (run,) = (tmp_path / "out").iterdir()
    rows = load_results(run).set_index("load_mode")
    assert (rows["engine"] == "virtual").all()
    ok = rows.loc["concurrency"]
    assert ok["status"] == "ok" and ok["completed"] == 200 and ok["ttft_ms_p50"] > 0
    assert ok["telemetry_reason"] == "not measured: simulated (virtual engine)"
    sat = rows.loc["rate"]
    assert sat["status"] in ("failed", "partial") and "saturated" in sat["error"]


@pytest.mark.parametrize("change, fragment", [
    ({"workloads": [{"name": "w", "kind": "fixed", "input_len": 9200, "output_len": 64}]}, "max_model_len"),
    ({"server": {**SWEEP["server"], "max_num_batched_tokens": 8}}, "max_num_batched_tokens: must be at least"),
    ({"server": {**SWEEP["server"], "quantization": None}}, "does not fit"),
    ({"server": {**SWEEP["server"], "model": "no-such-model"}}, "unknown model"),
    ({"server": {**SWEEP["server"], "speculative": {"method": "mtp", "num_speculative_tokens": 3}}},
     "acceptance_length"),
])
def test_what_the_real_engine_refuses_is_one_line_exit_2_before_anything_runs(tmp_path, change, fragment):
    code, out = _run(tmp_path, {**SWEEP, **change})
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_report_of_a_virtual_run_carries_the_estimate_banner():
    pts = pd.DataFrame({"run_id": ["r1", "r1"], "engine": ["virtual", "virtual"], "model": ["glm-5.2"] * 2,
                        "device": ["cpu", "cpu"]})
    caveats = headline_caveats(pts, [])
    assert caveats and caveats[0].startswith("ESTIMATE, NOT MEASURED (r1)")
    assert not any(c.startswith("CPU run") for c in caveats)  # simulated for an H200: not a CPU number
