"""Run a sweep: group points by server spec, start each engine once, measure each point.

Why grouping: a vLLM start costs 15-60 s (minutes for a large model on GPUs), a load point
often less. Every point that shares a `ServerSpec` reuses one server (`GroupSession`). A failure
is confined to what it breaks: an engine that cannot start fails its group's points (with the
reason from its log) and the next group starts fresh; a server that dies during a point fails
that point and is restarted for the group's remaining points.

Executors: `local` runs the groups one after another in this process; `ray` (bench.sweep.ray)
runs each group as a Ray task and streams its rows back here, so one run dir gathers them all.
Either way only this process writes the run dir, and a point counts as finished once its row is
written, which is what `--resume` relies on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench.config.sweep import Point, Sweep
from bench.engines.vllm_server import has_nvidia_gpu
from bench.errors import UserInputError
from bench.sweep import envinfo
from bench.sweep.events import ProgressEvent, ProgressFn, ignore
from bench.sweep.session import Group, run_group
from bench.sweep.store import RunStore

EXECUTORS = ("local", "ray")


@dataclass
class RunSummary:
    run_dir: Path
    points_total: int
    points_run: int = 0
    points_skipped: int = 0
    points_failed: int = 0
    server_starts: int = 0
    wall_s: float = 0.0
    measured_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    executor: str = "local"

    @property
    def sweep_efficiency(self) -> float | None:
        """Sum of the points' measured durations / sweep wall time (1.0 = no overhead).

        With parallel groups (`--executor ray`) it can exceed 1: it then also counts the parallelism.
        """
        return self.measured_s / self.wall_s if self.wall_s > 0 else None


def new_run_dir(sweep: Sweep, out_root: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(out_root) / f"{sweep.name}-{stamp}"
    d, n = base, 1
    while d.exists():
        n += 1
        d = Path(f"{base}-{n}")
    return d


def hardware_rate(sweep: Sweep) -> float:
    """$/GPU-hour for the sweep's hardware: explicit override, else the named tier."""
    if sweep.hardware.usd_per_gpu_hour is not None:
        return sweep.hardware.usd_per_gpu_hour
    from bench.config.hardware import load_hardware
    from bench.econ.cost import resolve_usd_per_gpu_hour

    return resolve_usd_per_gpu_hour(sweep.hardware.gpu, sweep.hardware.tier, load_hardware())


def open_run(sweep: Sweep, out_root: Path, resume: Path | None) -> tuple[RunStore, ProgressEvent | None]:
    """A fresh run dir, or the one being resumed; returns a warning event when its config changed."""
    run_dir = Path(resume) if resume else new_run_dir(sweep, out_root)
    if resume and not (run_dir / "sweep.yaml").is_file():
        raise UserInputError(f"--resume: {run_dir} is not a maas-bench run directory (no sweep.yaml)")
    store = RunStore(run_dir)
    if not resume:
        store.init(sweep.model_dump(mode="json"), envinfo.collect())
        return store, None
    stored = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    if stored != sweep.model_dump(mode="json"):
        # finished points are still matched by point id, so only points whose config is unchanged are skipped
        return store, {"type": "config_changed",
                       "message": f"resume: the config differs from {run_dir}/sweep.yaml; points whose "
                                  "resolved config changed are measured again"}
    return store, None


def group_points(points: list[Point], done: set[str]) -> tuple[list[Group], int]:
    """Unfinished points grouped by server spec, in sweep order; and how many were already done."""
    groups: dict[str, Group] = {}
    skipped = 0
    for i, p in enumerate(points):
        if p.point_id in done:
            skipped += 1
            continue
        groups.setdefault(p.server_hash, []).append((i, p))
    return list(groups.values()), skipped


def run_sweep(sweep: Sweep, out_root: Path = Path("results"), resume: Path | None = None,
              progress: ProgressFn | None = None, *, executor: str = "local",
              ray_address: str | None = None) -> RunSummary:
    """Measure every unfinished point of `sweep`; one server start per group of points sharing a spec."""
    if executor not in EXECUTORS:
        raise UserInputError(f"executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    emit = progress or ignore
    rate = hardware_rate(sweep)  # fail on an unknown GPU/tier before starting anything
    store, warning = open_run(sweep, out_root, resume)
    if warning:
        emit(warning)
    points = sweep.points()
    groups, skipped = group_points(points, store.finished_point_ids())
    summary = RunSummary(run_dir=store.dir, points_total=len(points), points_skipped=skipped, executor=executor)
    t_start = time.monotonic()
    emit({"type": "start", "run_dir": str(store.dir), "points": len(points), "skipped": skipped,
          "groups": len(groups), "executor": executor,
          "requests": sum(p.load.num_requests for g in groups for _, p in g)})
    if executor == "ray" and groups:
        from bench.sweep.ray import run_groups_on_ray

        for stats in run_groups_on_ray(sweep, groups, store, rate, emit, address=ray_address):
            stats.add_to(summary)
    else:
        on_gpu = has_nvidia_gpu()
        for group in groups:
            run_group(sweep, group, store, rate, on_gpu, emit).add_to(summary)
    summary.wall_s = time.monotonic() - t_start
    summary.rows = store.rows()
    emit({"type": "end", "summary": summary})
    return summary
