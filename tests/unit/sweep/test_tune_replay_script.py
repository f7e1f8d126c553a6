"""scripts/tune_real_engine.py: tune's search replayed over a run dir that holds the full grid. No server.

The grid is written by hand: 2 server configs (max_num_seqs 2, 8) x concurrency 1, 2, 4, 8, physical for a closed
loop (b = min(c, m) requests run, the rest queue): throughput 100 x b tok/s (flat once requests queue), TTFT p99
50 ms up to c = m and 100 ms more per batch of queued requests past it (50 + 100 (c - m)/m: (2,4) 150, (2,8) 350).
The two configs give the same row at c <= 2 (twins). With ttft_ms_p99<=100 the knee of m=2 is c=2 (200 tok/s) and
of m=8 c=8 (800 tok/s): the grid's best is (8, 8).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from bench.config.sweep import Sweep


@pytest.fixture(scope="module")
def script(load_script) -> ModuleType:
    return load_script("tune_real_engine")


def write_run(run_dir: Path, skip: int = 0) -> None:
    sweep = Sweep(name="r", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                  hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 1.0},
                  server={"model": "glm-4.5-tiny", "max_num_seqs": [2, 8]},
                  load={"concurrency": [1, 2, 4, 8], "num_requests": 4}, workloads=[{"name": "w"}])
    (run_dir / "rows").mkdir(parents=True)
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    for p in sweep.points()[skip:]:
        m, c = p.server.max_num_seqs, p.load.concurrency
        row = {"point_id": p.point_id, "status": "ok", "max_num_seqs": m, "concurrency": c,
               "output_tok_s": 100.0 * min(c, m), "ttft_ms_p99": 50.0 + 100.0 * max(c - m, 0) / m}
        (run_dir / "rows" / f"{p.point_id}.json").write_text(json.dumps(row))


def test_replay_counts_the_search_and_finds_the_grid_best(script: ModuleType, tmp_path: Path) -> None:
    write_run(tmp_path)
    (line,) = script.replay(tmp_path, ["ttft_ms_p99<=100"], "output_tok_s")
    # Larger batches first. m=8 searches c <= 2 x 8 (all 4 loads); its first probe fills the batch: c=8: 50 ms ok,
    # 800 tok/s, its top (1). m=2 searches c <= 4; no twin rows (m=8 measured only c=8 > 2); m=8's knee sat at its
    # batch limit, so m=2 starts at its own, c=2: 50 ms ok, 200 tok/s; its bound at c=4, 200 x 4/2 = 400, cannot
    # reach 800: pruned (1). 2 of 8 points.
    assert (line["measured"], line["grid"], line["share"]) == (2, 8, 0.25)
    assert line["found_grid_best"] is True and line["tie_decided"] is False
    assert line["best"] == line["grid_best"] and "max_num_seqs=8" in line["best"] and "concurrency=8" in line["best"]
    assert line["best_value"] == 800.0


def test_bad_run_dir_and_missing_rows_exit_2_with_one_line(script: ModuleType, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert script.main([str(tmp_path / "nope")]) == 2
    write_run(tmp_path / "partial", skip=3)
    assert script.main([str(tmp_path / "partial"), "--slo", "ttft_ms_p99<=100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: run_dir:") and "sweep.yaml" in err[0]
    assert err[1] == "error: run_dir: 3 point(s) of the grid have no row; measure the full grid first"
