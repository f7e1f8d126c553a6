"""Where a sweep's wall time went: server starts, warm-up, measurement, cool-down, the rest.

Why: one efficiency figure (measured seconds / wall seconds) says how much of a sweep was overhead but not
which overhead; a sweep dominated by server starts needs fewer restarts, one dominated by warm-up a shorter
warm-up. Each server group adds up its `WallTime` (bench.sweep.session); the run adds the groups up, and
whatever the groups do not account for (preparing the run, reading rows, Ray scheduling) is `other_s`.

The buckets, in wall seconds:
- server_start_s: starting (and restarting) the engine, failed starts included;
- warmup_s: from a point's load start to its first measured send (bench.sweep.probe.ServerProbe's clock);
- measure_s: from the first measured send to the end of the last measured request;
- cooldown_s: from there until the cool-down load is cancelled;
- point_other_s: the rest of each point: building prompts, emptying the prefix cache, the /metrics scrapes,
  summarizing and writing the row, waiting for a dying server to exit; a point without phases (an offline
  batch, a simulated point, a point whose server failed) is all point_other_s;
- server_stop_s: stopping the engine at the group's end;
- other_s (run only): wall time outside every group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

TIMING_FILE = "timing.json"
PHASE_COLUMNS = ("warmup_wall_s", "measure_wall_s", "cooldown_wall_s")


@dataclass
class WallTime:
    """Wall seconds of one server group (or, summed, of a run) by bucket (module docstring)."""

    server_start_s: float = 0.0
    warmup_s: float = 0.0
    measure_s: float = 0.0
    cooldown_s: float = 0.0
    point_other_s: float = 0.0
    server_stop_s: float = 0.0

    def add(self, other: WallTime) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def add_point(self, row: dict[str, Any]) -> None:
        """One point's row: its phase columns and its point_wall_s (the rest of it is point_other_s)."""
        phases = [row.get(c) or 0.0 for c in PHASE_COLUMNS]
        self.warmup_s += phases[0]
        self.measure_s += phases[1]
        self.cooldown_s += phases[2]
        self.point_other_s += max((row.get("point_wall_s") or 0.0) - sum(phases), 0.0)

    @property
    def total_s(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def timing_report(wall_s: float, total: WallTime, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """timing.json: the run's buckets (with other_s = wall time outside every group) and each group's."""
    run = {**total.as_dict(), "other_s": round(max(wall_s - total.total_s, 0.0), 3), "wall_s": round(wall_s, 3)}
    return {"run": run, "groups": groups}


def write_timing(run_dir: Path, report: dict[str, Any]) -> Path:
    import json

    from bench.atomic import atomic_write_text

    path = Path(run_dir) / TIMING_FILE
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return path


def timing_line(report: dict[str, Any]) -> str:
    """One line for the run summary: each bucket's seconds and share of the wall time."""
    run = report["run"]
    wall = run["wall_s"] or 1.0
    names = (("server_start_s", "server start"), ("warmup_s", "warm-up"), ("measure_s", "measurement"),
             ("cooldown_s", "cool-down"), ("point_other_s", "per-point other"), ("server_stop_s", "server stop"),
             ("other_s", "outside groups"))
    return "wall time: " + ", ".join(f"{label} {run[k]:.1f} s ({run[k] / wall:.0%})" for k, label in names)
