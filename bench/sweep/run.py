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

from bench.config.sweep import Point, Sweep
from bench.errors import UserInputError
from bench.sweep import envinfo
from bench.sweep.events import ProgressEvent, ProgressFn, ignore
from bench.sweep.prepare import EXECUTORS, RunPlan, check_local_gpus, prepare
from bench.sweep.pricing import Pricing
from bench.sweep.session import Group, GroupStats, run_group
from bench.sweep.store import LOGS_DIR, RunStore, check_resume_target, create_run_dir
from bench.sweep.timing import timing_report, write_timing

__all__ = ["EXECUTORS", "POINT_BUDGET", "RunPlan", "RunSummary", "check_local_gpus", "check_point_budget",
           "group_points", "new_run_dir", "open_run", "prepare", "run_sweep"]

# The most points a sweep runs without `--allow-large-sweep`. Why a budget: a point costs at least seconds
# (warm-up, measured requests, cool-down), so 2,000 points is already hours of a GPU; a sweep file whose
# axes multiply to a million points is almost always a mistake, and used to start without a word (issue 25).
POINT_BUDGET = 2000


@dataclass(kw_only=True)
class RunSummary(GroupStats):
    """The whole run: the groups' counters summed (GroupStats: server_starts, points_run, points_failed,
    measured_s; declared once there, so `GroupStats.add_to` and this class cannot drift apart), plus
    what only the run knows."""

    run_dir: Path
    points_total: int
    points_skipped: int = 0
    wall_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    executor: str = "local"
    timing: dict[str, Any] = field(default_factory=dict)  # where the wall time went: timing.json (bench.sweep.timing)

    @property
    def sweep_efficiency(self) -> float | None:
        """Sum of the points' measured durations / sweep wall time (1.0 = no overhead).

        With parallel groups (`--executor ray`) it can exceed 1: it then also counts the parallelism.
        """
        return self.measured_s / self.wall_s if self.wall_s > 0 and self.measured_s > 0 else None


def check_point_budget(sweep: Sweep, allow_large: bool, budget: int = POINT_BUDGET) -> int:
    """The sweep's point count (server specs x workloads x load points, counted before any Point is built);
    UserInputError (one line, exit 2) naming the count and the flag when it exceeds `budget` unless
    `allow_large`."""
    n = len(sweep.server_specs()) * len(sweep.workloads) * len(sweep.load.points())
    if n > budget and not allow_large:
        raise UserInputError(f"the sweep has {n:,} points, above the budget of {budget:,} points per run; pass "
                             "--allow-large-sweep to run it anyway")
    return n


def run_dir_base(sweep: Sweep, out_root: Path) -> Path:
    """`<out>/<name>-<UTC stamp>`: the run id before `create_run_dir` adds a suffix to make it unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(out_root) / f"{sweep.name}-{stamp}"


def new_run_dir(sweep: Sweep, out_root: Path) -> Path:
    """Create a fresh, unique run directory (atomically: see bench.sweep.store.create_run_dir)."""
    return create_run_dir(run_dir_base(sweep, out_root))


def open_run(plan: RunPlan | Sweep, out_root: Path, resume: Path | None = None,
             emit: ProgressFn | None = None) -> tuple[RunStore, ProgressEvent | None]:
    """A fresh run dir, or the one being resumed, locked for this run; returns a warning event when its
    config changed. The caller releases the lock with `store.unlock()` when the run ends.

    `plan` comes from `prepare` (a bare Sweep is prepared here, with `resume`). A fresh run dir is
    created atomically under a unique name. On resume, before anything starts: the directory's lock is
    taken (refused, one line, when another run holds it) and the sweep is checked to be the one the
    directory holds (`check_resume_target`); a server that a killed earlier run of this dir left running
    is stopped (the engine class's `stop_stale`: logs/*.pid.json), and unreadable rows/*.json files are
    set aside (named in a warning through `emit`) so their points are measured again.
    """
    if isinstance(plan, Sweep):
        plan = prepare(plan, resume)
    sweep, resume = plan.sweep, plan.resume
    dump = sweep.model_dump(mode="json")
    if not resume:
        base = run_dir_base(sweep, out_root)
        if not base.resolve().is_relative_to(Path(out_root).resolve()):
            raise UserInputError(f"name: the run directory {base} would be outside --out {out_root}")
        store = RunStore(create_run_dir(base))
        store.lock()  # nobody else can hold it yet: --resume needs a sweep.yaml, written just below
        try:
            store.init(dump, envinfo.collect())
        except BaseException:
            store.unlock()
            raise
        return store, None
    store = RunStore(Path(resume))
    store.lock()
    try:
        changed = check_resume_target(store.dir, dump)
        say = emit or ignore
        for pid in plan.engine.stop_stale(store.dir / LOGS_DIR):
            say({"type": "warning", "message": f"resume: stopped server process group {pid} left running by "
                                               "an earlier, killed run of this directory"})
        for f in store.set_aside_corrupt_rows():
            say({"type": "warning", "message": f"resume: {f.with_suffix('')} is not a readable row; renamed to "
                                               f"{f.name} and its point is measured again"})
    except BaseException:
        store.unlock()
        raise
    if changed:
        # finished points are still matched by point id, so only points whose config is unchanged are skipped
        return store, {"type": "config_changed",
                       "message": f"resume: the config differs from {store.dir}/sweep.yaml; points whose "
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


def run_sweep(sweep: Sweep | RunPlan, out_root: Path = Path("results"), resume: Path | None = None,
              progress: ProgressFn | None = None, *, executor: str = "local",
              ray_address: str | None = None, keep_failed: bool = False,
              pricing: Pricing | None = None) -> RunSummary:
    """Measure every unfinished point of `sweep`; one server start per group of points sharing a spec.

    `sweep` is a RunPlan from `prepare` (the CLI's way: every check is made before the progress bar
    draws), or a Sweep that is prepared here with `resume`, `executor` and `pricing`. On resume a
    point counts as finished when its row says ok; failed and partial points are measured again
    (their new row replaces the old one) unless `keep_failed`.
    """
    plan = sweep if isinstance(sweep, RunPlan) else prepare(sweep, resume, executor, pricing)
    sweep, resume, executor, rate = plan.sweep, plan.resume, plan.executor, plan.rate
    emit = progress or ignore
    store, warning = open_run(plan, out_root, emit=emit)
    try:
        if warning:
            emit(warning)
        for note in plan.notes:
            emit({"type": "note", "message": note})
        points = plan.points
        rows, _ = store.read_rows()  # once: the same sets as store.finished_point_ids(keep_failed=...)
        all_ids = {r["point_id"] for r in rows}
        ok_ids = {r["point_id"] for r in rows if r.get("status") == "ok"}
        groups, skipped = group_points(points, all_ids if keep_failed else ok_ids)
        if resume:
            ids = {p.point_id for p in points}
            retried = len((all_ids - ok_ids) & ids)
            if retried and not keep_failed:
                emit({"type": "warning", "message": f"resume: measuring {retried} failed or partial point(s) again "
                                                    "(--keep-failed keeps their rows instead)"})
            elif retried:
                emit({"type": "warning", "message": f"resume: keeping {retried} failed or partial point(s) "
                                                    "(--keep-failed)"})
        summary = RunSummary(run_dir=store.dir, points_total=len(points), points_skipped=skipped, executor=executor)
        t_start = time.monotonic()
        emit({"type": "start", "run_dir": str(store.dir), "points": len(points), "skipped": skipped,
              "groups": len(groups), "executor": executor,
              "requests": sum(p.load.num_requests for g in groups for _, p in g)})
        if executor == "ray" and groups:
            from bench.sweep.ray import run_groups_on_ray

            for stats in run_groups_on_ray(plan, groups, store, emit, address=ray_address):
                stats.add_to(summary)
        else:
            on_gpu = envinfo.has_nvidia_gpu()
            for group in groups:
                run_group(sweep, group, store, rate, on_gpu, emit, cost=plan.pricing.cost_columns).add_to(summary)
        summary.wall_s = time.monotonic() - t_start
        summary.timing = timing_report(summary.wall_s, summary.wall, summary.groups)
        write_timing(store.dir, summary.timing)
        summary.rows = store.rows()
        # points.parquet once, at the end (a point writes only its row: the per-point cost stays flat); an
        # interrupted run skips it (a Ctrl-C must end the run within 2 s) and load_results rebuilds it
        store.write_table(summary.rows)
    finally:
        store.unlock()  # the run is over: the directory may be resumed
    emit({"type": "end", "summary": summary})
    return summary
