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

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench.config.catalog import uncataloged_note
from bench.config.sweep import Point, Sweep
from bench.engines.vllm_server import check_speculative_support, has_nvidia_gpu, stop_stale_servers
from bench.errors import UserInputError
from bench.sweep import envinfo
from bench.sweep.events import ProgressEvent, ProgressFn, ignore
from bench.sweep.session import Group, GroupStats, run_group
from bench.sweep.store import LOGS_DIR, RunStore

EXECUTORS = ("local", "ray")


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


def preflight(sweep: Sweep, resume: Path | None = None) -> None:
    """Checks that need more than the config layer, done before a run dir or a server exists:
    every trace file is read and parsed (a missing file or a malformed line fails here, not after
    a server start), and its longest row must fit the server's max_model_len."""
    from bench.measure.workloads import read_trace

    if resume is not None and not (Path(resume) / "sweep.yaml").is_file():
        raise UserInputError(f"--resume: {resume} is not a maas-bench run directory (no sweep.yaml)")
    for w in sweep.workloads:
        if w.kind != "trace":
            continue
        rows = read_trace(w.trace_path)
        if sweep.engine.capabilities.needs_base_url:
            continue
        need = max(isl + osl for _, isl, osl, _ in rows)
        for spec in sweep.server_specs():
            if need > spec.max_model_len:
                raise UserInputError(f"workload {w.name!r}: trace {w.trace_path} has a request of {need} tokens "
                                     f"(input + output) but server.max_model_len is {spec.max_model_len}")


def open_run(sweep: Sweep, out_root: Path, resume: Path | None,
             emit: ProgressFn | None = None) -> tuple[RunStore, ProgressEvent | None]:
    """A fresh run dir, or the one being resumed; returns a warning event when its config changed.

    On resume, before anything starts: a server that a killed earlier run of this dir left running
    is stopped (logs/*.pid.json), and unreadable rows/*.json files are set aside (named in a
    warning through `emit`) so their points are measured again.
    """
    preflight(sweep, resume)
    run_dir = Path(resume) if resume else new_run_dir(sweep, out_root)
    if not resume and not run_dir.resolve().is_relative_to(Path(out_root).resolve()):
        raise UserInputError(f"name: the run directory {run_dir} would be outside --out {out_root}")
    store = RunStore(run_dir)
    if resume:
        say = emit or ignore
        for pid in stop_stale_servers(run_dir / LOGS_DIR):
            say({"type": "warning", "message": f"resume: stopped server process group {pid} left running by "
                                               "an earlier, killed run of this directory"})
        for f in store.set_aside_corrupt_rows():
            say({"type": "warning", "message": f"resume: {f.with_suffix('')} is not a readable row; renamed to "
                                               f"{f.name} and its point is measured again"})
    if not resume:
        store.init(sweep.model_dump(mode="json"), envinfo.collect())
        return store, None
    try:
        stored = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        stored = None  # unreadable: treated as changed; points are matched by id anyway
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


def check_local_gpus(sweep: Sweep, inventory: list[str] | None = None) -> None:
    """A sweep whose engine runs on this machine's GPUs (vllm, vllm-offline) and whose hardware is an NVIDIA
    GPU of configs/hardware.yaml needs that many of those GPUs here (`nvidia-smi`; `inventory` for tests).
    Why: on the wrong machine every point would fail minutes later with an engine error far from the
    cause (or silently run on fewer/other GPUs); one line naming what is needed and what was found is
    better. CPU stand-ins and non-NVIDIA GPUs are not checked."""
    from bench.config.hardware import load_hardware
    from bench.engines.registry import engine_class

    if not engine_class(sweep.engine.kind).uses_local_gpus:
        return
    gpu_id = sweep.hardware.gpu
    spec = load_hardware().gpu(gpu_id)
    if spec.is_cpu_standin or not (spec.name or "").startswith("NVIDIA"):
        return
    need = max(sweep.gpu_count(s) for s in sweep.server_specs())
    found = envinfo.gpu_inventory() if inventory is None else inventory
    model = re.compile(rf"\b{re.escape(gpu_id)}\b", re.IGNORECASE)
    matching = [g for g in found if model.search(g)]
    if len(matching) < need:
        seen = ", ".join(found) if found else "no NVIDIA GPU (nvidia-smi lists none)"
        raise UserInputError(f"hardware: this sweep needs {need}x {gpu_id} ({spec.name}) on this machine; "
                             f"found {len(matching)}: {seen}")


def run_sweep(sweep: Sweep, out_root: Path = Path("results"), resume: Path | None = None,
              progress: ProgressFn | None = None, *, executor: str = "local",
              ray_address: str | None = None, keep_failed: bool = False) -> RunSummary:
    """Measure every unfinished point of `sweep`; one server start per group of points sharing a spec.

    On resume a point counts as finished when its row says ok; failed and partial points are
    measured again (their new row replaces the old one) unless `keep_failed`.
    """
    if executor not in EXECUTORS:
        raise UserInputError(f"executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    emit = progress or ignore
    rate = hardware_rate(sweep)  # fail on an unknown GPU/tier before starting anything
    from bench.measure.workloads import check_workload_files

    for wl in sweep.workloads:  # a bad trace row fails here (exit 2), not after a server started
        check_workload_files(wl)
    check_speculative_support(sweep.server_specs())  # a pinned acceptance needs a vLLM that has it
    if executor == "local":
        check_local_gpus(sweep)  # a GPU sweep on a machine without those GPUs: exit 2 before any start
    store, warning = open_run(sweep, out_root, resume, emit)
    if warning:
        emit(warning)
    for note in filter(None, {uncataloged_note(s.model) for s in sweep.server_specs()}):
        emit({"type": "note", "message": note})
    points = sweep.points()
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
