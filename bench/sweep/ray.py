"""Run sweep groups on a Ray cluster: one Ray task per server group, rows streamed back to one run dir.

Why Ray tasks per group (not per point): a group is the unit that owns a server, so its points
must run where that server runs, in order. Each task declares the GPUs its server needs
(`num_gpus` = the spec's GPU count, i.e. tensor-parallel size unless `hardware.count` says
otherwise), so Ray places groups on nodes with enough free GPUs and runs as many at once as fit.

Why stream rows through a Ray queue instead of returning them at the end: the driver (this
process) is the only writer of the run dir, and it writes each row as soon as its point finishes.
A driver killed mid-sweep therefore keeps every point that reached it, and `--resume` works the
same as with the local executor. Worker nodes need no shared filesystem: server logs travel back
with the task's result.

Requirements on a real cluster: every node has maas-bench and the engine (vllm) installed in the
same version as the driver; the driver connects with `--address` (e.g. `auto` or `ray://head:10001`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config.sweep import ServerSpec, Sweep
from bench.engines.registry import engine_class
from bench.errors import UserInputError
from bench.sweep.events import ProgressEvent, ProgressFn
from bench.sweep.prepare import RunPlan
from bench.sweep.session import CostFn, Group, GroupStats, base_row, run_group
from bench.sweep.store import LOGS_DIR, RunStore

log = logging.getLogger(__name__)

# Events forwarded from workers to the driver's progress callback. Per-request events are left out:
# they would cost one actor call each; the driver advances progress per point instead.
FORWARDED_EVENTS = ("server_starting", "server_ready", "server_failed", "point_start", "point_done")
POLL_S = 0.2


def group_resources(sweep: Sweep, spec: ServerSpec, cluster_gpus: float, cpus_per_group: float = 1.0,
                    engine: Any = None) -> dict[str, float]:
    """Ray resources for one group's task: its server's GPUs (only where the cluster has GPUs).

    An engine that runs on the node's GPUs (`uses_local_gpus`: vllm, vllm-offline) needs
    `gpu_count` GPUs on one node (tensor parallel = spec.tensor_parallel_size unless `hardware.count`
    overrides). An external endpoint (engine kind "openai") needs none. On a CPU-only cluster (tests,
    laptops) GPUs are not requested, or Ray would never schedule the task.
    """
    local = (engine or engine_class(sweep.engine.kind)).uses_local_gpus
    gpus = float(sweep.gpu_count(spec)) if local and cluster_gpus > 0 else 0.0
    return {"num_gpus": gpus, "num_cpus": cpus_per_group}


def check_fits(needs: list[dict[str, float]], node_gpus: list[float]) -> None:
    """Fail before submitting when a group needs more GPUs than any one node has (Ray would wait forever)."""
    biggest = max(node_gpus, default=0.0)
    for r in needs:
        if r["num_gpus"] > biggest:
            raise UserInputError(
                f"--executor ray: a server group needs {r['num_gpus']:g} GPUs on one node (tensor_parallel_size"
                f" / hardware.count) but the largest node of the cluster has {biggest:g}"
            )


class _QueueSink(RunStore):
    """A RunStore stand-in inside a Ray task: rows go to the driver through a queue, logs stay local."""

    def __init__(self, run_id: str, local_dir: Path, queue: Any) -> None:
        super().__init__(local_dir)
        self._run_id = run_id
        self.queue = queue

    @property
    def run_id(self) -> str:
        return self._run_id

    def write_point(self, row: dict[str, Any], requests: pd.DataFrame | None = None) -> None:
        self.queue.put(("point", row, requests))

    def logs(self) -> dict[str, str]:
        d = self.dir / LOGS_DIR
        return {p.name: p.read_text(errors="replace") for p in sorted(d.glob("*.log"))} if d.is_dir() else {}


def _group_task(sweep: Sweep, group: Group, run_id: str, rate: float | None, queue: Any,
                cost: CostFn) -> dict[str, Any]:
    """Body of the Ray task: measure one group on this node; rows and events go through `queue`."""
    from bench.sweep.envinfo import has_nvidia_gpu

    def emit(e: ProgressEvent) -> None:
        if e["type"] in FORWARDED_EVENTS:
            queue.put(("event", e))

    with tempfile.TemporaryDirectory(prefix="maas-bench-ray-") as tmp:
        sink = _QueueSink(run_id, Path(tmp), queue)
        stats = run_group(sweep, group, sink, rate, has_nvidia_gpu(), emit, cost=cost)
        return {"stats": stats, "logs": sink.logs()}


def _drain(queue: Any, store: RunStore, emit: ProgressFn, written: set[str]) -> None:
    while True:
        items = queue.get_nowait_batch(queue.qsize()) if queue.qsize() else []
        if not items:
            return
        for item in items:
            if item[0] == "point":
                _, row, requests = item
                store.write_point(row, requests)
                written.add(row["point_id"])
            else:
                e = item[1]
                if e["type"] == "point_done" and "skipped_requests" not in e:
                    e = {**e, "skipped_requests": e["row"].get("num_requests") or 0}  # advance progress
                emit(e)


def _init_ray(address: str | None) -> bool:
    """Connect to `address` (None = start a private local instance). True if we must shut it down."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserInputError(f"--address: cannot connect to the Ray cluster at {address!r}: {e}") from None
    return True


def run_groups_on_ray(plan: RunPlan, groups: list[Group], store: RunStore, emit: ProgressFn,
                      address: str | None = None, cpus_per_group: float = 1.0) -> list[GroupStats]:
    """Run each group as a Ray task (in parallel as resources allow); write all rows into `store`."""
    sweep, rate = plan.sweep, plan.rate
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError:
        raise UserInputError("--executor ray needs the ray package: pip install ray") from None
    owns = _init_ray(address)
    try:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        node_gpus = [float(n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
        needs = [group_resources(sweep, g[0][1].server, cluster_gpus, cpus_per_group, plan.engine) for g in groups]
        check_fits(needs, node_gpus)
        queue = Queue()
        task = ray.remote(max_retries=0)(_group_task)
        refs = {task.options(**res).remote(sweep, g, store.run_id, rate, queue, plan.pricing.cost_columns): g
                for res, g in zip(needs, groups, strict=True)}
        emit({"type": "ray_submitted", "tasks": len(refs), "cluster_gpus": cluster_gpus})
        written: set[str] = set()
        stats: list[GroupStats] = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
            _drain(queue, store, emit, written)
            for ref in done:
                stats.append(_collect(ref, refs[ref], sweep, store, rate, emit, written))
        _drain(queue, store, emit, written)
        return stats
    finally:
        if owns:
            ray.shutdown()


def _collect(ref: Any, group: Group, sweep: Sweep, store: RunStore, rate: float | None, emit: ProgressFn,
             written: set[str]) -> GroupStats:
    """A finished task: copy its server logs; if the task itself crashed, fail its unwritten points."""
    import ray

    try:
        result = ray.get(ref)
    except Exception as e:  # the task died (node lost, worker OOM-killed, ...): record, go on
        reason = f"ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log.warning("%s", reason)
        stats = GroupStats()
        for idx, point in group:
            if point.point_id in written:
                continue
            row = base_row(sweep, point, idx, store.run_id, rate, on_gpu=False)
            row.update({"status": "failed", "error": reason, "device": None})
            store.write_point(row)
            stats.points_run += 1
            stats.points_failed += 1
            emit({"type": "point_done", "row": row, "skipped_requests": point.load.num_requests})
        return stats
    for name, text in result["logs"].items():
        path = store.dir / LOGS_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # a group resumed on another node appends to the same log
            f.write(text)
    return result["stats"]
