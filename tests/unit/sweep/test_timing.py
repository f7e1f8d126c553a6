"""Where a sweep's wall time went (bench.sweep.timing): the buckets of a group and of the run, by hand."""

from __future__ import annotations

import json

import pytest

from bench.sweep.timing import WallTime, timing_line, timing_report, write_timing


def test_a_point_splits_into_its_phases_and_the_rest():
    w = WallTime()
    w.add_point({"point_wall_s": 10.0, "warmup_wall_s": 2.0, "measure_wall_s": 6.5, "cooldown_wall_s": 0.5})
    # a point without phases (failed start, offline batch) is all "other"
    w.add_point({"point_wall_s": 3.0, "warmup_wall_s": None, "measure_wall_s": None, "cooldown_wall_s": None})
    assert (w.warmup_s, w.measure_s, w.cooldown_s) == (2.0, 6.5, 0.5)
    assert w.point_other_s == pytest.approx(1.0 + 3.0)
    w.server_start_s, w.server_stop_s = 30.0, 5.0
    assert w.total_s == pytest.approx(30 + 2 + 6.5 + 0.5 + 4 + 5)


def test_groups_add_up_and_the_run_keeps_what_no_group_accounts_for(tmp_path):
    a, b = WallTime(server_start_s=20.0, measure_s=10.0), WallTime(server_start_s=40.0, warmup_s=5.0, measure_s=20.0)
    total = WallTime()
    total.add(a)
    total.add(b)
    report = timing_report(100.0, total, [{"server_hash": "a", **a.as_dict()}, {"server_hash": "b", **b.as_dict()}])
    run = report["run"]
    assert run["server_start_s"] == 60.0 and run["measure_s"] == 30.0 and run["warmup_s"] == 5.0
    assert run["other_s"] == pytest.approx(100.0 - 95.0) and run["wall_s"] == 100.0
    path = write_timing(tmp_path, report)
    assert json.loads(path.read_text()) == report and path.name == "timing.json"
    line = timing_line(report)
    assert "server start 60.0 s (60%)" in line and "measurement 30.0 s (30%)" in line
    assert "outside groups 5.0 s (5%)" in line
