"""Ray executor: two server groups run as parallel Ray tasks on a local Ray (num_cpus=2) against the sim.

Also the resource rules (num_gpus = the group's GPU count) without Ray.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from bench.config.sweep import Sweep
from bench.errors import UserInputError
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess
from bench.sweep.ray import check_fits, group_resources
from bench.sweep.store import load_requests, load_results


def _sweep(**kw) -> Sweep:
    base = {"name": "r", "engine": {"kind": "vllm"}, "server": {"model": "glm-4.5-tiny"},
            "load": {"concurrency": [1]}}
    return Sweep(**{**base, **kw})


def test_num_gpus_is_the_tensor_parallel_size_on_a_gpu_cluster():
    sweep = _sweep(server={"model": "glm-4.5-tiny", "tensor_parallel_size": [1, 4]})
    specs = sweep.server_specs()
    assert [group_resources(sweep, s, cluster_gpus=8)["num_gpus"] for s in specs] == [1.0, 4.0]
    # hardware.count overrides the GPU count per server (e.g. TP2 x DP2 on 4 GPUs)
    counted = _sweep(hardware={"gpu": "h100", "count": 8}, server={"model": "glm-4.5-tiny", "tensor_parallel_size": 4})
    assert group_resources(counted, counted.server_specs()[0], cluster_gpus=8)["num_gpus"] == 8.0
    # no GPUs on the cluster (CPU test instance): none requested, or the task would never be scheduled
    assert group_resources(sweep, specs[1], cluster_gpus=0)["num_gpus"] == 0.0
    # an external endpoint needs no GPU on the worker
    ext = _sweep(engine={"kind": "openai", "base_url": "http://127.0.0.1:9"})
    assert group_resources(ext, ext.server_specs()[0], cluster_gpus=8)["num_gpus"] == 0.0


def test_a_group_larger_than_any_node_is_refused_before_submitting():
    check_fits([{"num_gpus": 8.0}], node_gpus=[8.0, 4.0])
    with pytest.raises(UserInputError, match="needs 8 GPUs on one node .* largest node of the cluster has 4"):
        check_fits([{"num_gpus": 8.0}], node_gpus=[4.0, 4.0])


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def test_two_groups_run_in_parallel_into_one_run_dir(tmp_path, local_ray):
    from bench.sweep.run import run_sweep

    # sim: 40 ms TTFT + 24 x 40 ms = 1 s per request; c=1 x 4 requests = ~4 s per point, ~6 s per group. The
    # overlap check below needs each group's window to outlast the skew between the two Ray workers' starts
    # (each imports the harness; on 2 cores shared with other jobs one can come up seconds after the other),
    # so the groups are kept this long rather than the ~3 s that suffice on an idle box.
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=40, itl_ms=40))
    try:
        sweep = Sweep(
            name="ray", engine={"kind": "openai", "base_url": url, "ignore_eos": True},
            hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
            server={"model": "glm-4.5-tiny", "max_num_seqs": [4, 8]},
            load={"concurrency": [1, 2], "num_requests": 4, "warmup_requests": 0},
            workloads=[{"name": "w", "input_len": 8, "output_len": 25}],
        )
        events: list[dict] = []
        summary = run_sweep(sweep, out_root=tmp_path, executor="ray", progress=events.append)
    finally:
        stop_sim_subprocess(proc)
    df = load_results(summary.run_dir)
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["output_tokens"] == 4 * 25).all()
    assert set(df["run_id"]) == {summary.run_dir.name}
    for pid in df["point_id"]:  # per-request files were shipped back too
        req = load_requests(summary.run_dir, pid)
        assert int((~req["warmup"] & ~req["cooldown"]).sum()) == 4  # the 4 measured requests
    assert [e["tasks"] for e in events if e["type"] == "ray_submitted"] == [2]
    # parallel: each group's measuring window overlaps the other's
    spans = {}
    for seqs, g in df.groupby("max_num_seqs"):
        spans[seqs] = (min(map(_ts, g["started_at"])), max(map(_ts, g["finished_at"])))
    (a0, a1), (b0, b1) = spans[4], spans[8]
    assert a0 < b1 and b0 < a1, spans
    assert summary.points_run == 4 and summary.points_failed == 0
