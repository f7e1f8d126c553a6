"""Issue 18, sweep side: failed points are retried on resume (unless --keep-failed), a corrupt
rows/*.json is named and its point re-measured, the run name cannot leave --out, and request
generation stays lazy (bounded memory) for a huge num_requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import tracemalloc

import pytest

from bench.config.sweep import LoadPoint, Sweep
from bench.errors import UserInputError
from bench.measure.client import RequestSpec
from bench.measure.loadgen import LOOP_LAG_P50_LIMIT_MS, LoadResult, client_health, run_load
from bench.sweep.run import open_run, run_sweep

CLOSED = "http://127.0.0.1:9"  # nothing listens: every request fails at once


def _sweep(**kw) -> Sweep:
    return Sweep(name="r", engine={"kind": "openai", "base_url": CLOSED}, hardware={"usd_per_gpu_hour": 1.0},
                 server={"model": "glm-4.5-tiny"}, load={"concurrency": [1, 2], "num_requests": 2,
                                                          "warmup_requests": 0, "timeout_s": 5},
                 workloads=[{"name": "w", "input_len": 8, "output_len": 4}], **kw)


def test_failed_points_are_retried_on_resume_unless_keep_failed(tmp_path):
    sweep = _sweep()
    first = run_sweep(sweep, out_root=tmp_path)
    assert first.points_failed == 2
    events: list[dict] = []
    again = run_sweep(sweep, out_root=tmp_path, resume=first.run_dir, progress=events.append)
    assert (again.points_run, again.points_skipped) == (2, 0)
    assert any("measuring 2 failed or partial point(s) again" in str(e.get("message")) for e in events)
    kept = run_sweep(sweep, out_root=tmp_path, resume=first.run_dir, keep_failed=True)
    assert (kept.points_run, kept.points_skipped) == (0, 2)
    assert len(list((first.run_dir / "rows").glob("*.json"))) == 2  # retried rows replaced, not added


def test_corrupt_row_is_named_set_aside_and_remeasured(tmp_path):
    sweep = _sweep()
    first = run_sweep(sweep, out_root=tmp_path)
    bad = sorted((first.run_dir / "rows").glob("*.json"))[0]
    bad.write_text('{"point_id": "tr')
    events: list[dict] = []
    again = run_sweep(sweep, out_root=tmp_path, resume=first.run_dir, progress=events.append, keep_failed=True)
    msgs = [str(e.get("message")) for e in events if e.get("type") == "warning"]
    assert any(str(bad) in m and "not a readable row" in m for m in msgs), msgs
    assert (again.points_run, again.points_skipped) == (1, 1)
    assert bad.is_file() and bad.with_name(bad.name + ".corrupt").is_file()
    json.loads(bad.read_text())  # rewritten by the re-measured point


def test_run_dir_cannot_leave_out_even_if_a_name_slipped_through(tmp_path):
    sweep = _sweep().model_copy(update={"name": "../../escape"})  # bypasses the name validator
    with pytest.raises(UserInputError, match="outside --out"):
        open_run(sweep, tmp_path / "out", None)
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "out").exists()


def test_huge_num_requests_is_generated_lazily_with_bounded_memory():
    made = itertools.count()

    def endless():
        while True:
            next(made)
            yield RequestSpec(prompt="x " * 64, input_len=64, output_len=4)

    async def send(idx, req, warm, sched):
        raise RuntimeError("stop after the first send")  # a harness fault ends the point at once

    lp = LoadPoint(concurrency=1, num_requests=10**15, warmup_requests=0, cooldown=False)
    tracemalloc.start()
    with pytest.raises(RuntimeError, match="stop after the first send"):
        asyncio.run(run_load(send, [], endless(), lp))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert next(made) < 10_000  # only the prefetch was generated, not 10^15 prompts
    assert peak < 50 * 2**20


def test_client_not_kept_up_from_receive_side_loop_lag():
    res = LoadResult()
    res.loop_lag_samples = [(i, 30.0 + i) for i in range(100)]  # a saturated event loop: late all the time
    client_health(res)
    assert res.client_kept_up is False
    assert res.loop_lag_p50_ms == pytest.approx(79.5)  # median of 30..129
    assert "event-loop lag p50 79.5 ms" in (res.client_lag_reason or "") and LOOP_LAG_P50_LIMIT_MS < 79.5


def test_idle_loop_with_one_stall_keeps_client_kept_up():
    res = LoadResult()
    res.loop_lag_samples = [(i, 0.2) for i in range(99)] + [(99, 250.0)]  # one GC pause is not saturation
    client_health(res)
    assert res.client_kept_up is True and res.loop_lag_p50_ms == pytest.approx(0.2)
