"""THE progress event of a sweep (and of `tune`): one typed dict, defined once.

Why a TypedDict and not a dataclass: events cross a Ray queue, are printed by the CLI and
collected by tests as plain dicts (`e["type"]`); a TypedDict types them without changing that.
Which keys an event carries depends on its `type`:

- start: run_dir, points, skipped, groups, executor, requests
- config_changed: message
- note: message (e.g. a model the catalog does not know: no planner or KV figures for it)
- server_starting: server (the spec as a dict), server_hash, points
- server_ready: server_hash, pid, restart, startup_s
- server_failed: server_hash, error
- point_start: index, point, requests
- request_done: ok
- point_done: row, skipped_requests (requests that will not report request_done)
- group_done: server_hash, timing (the group's wall seconds by bucket, bench.sweep.timing)
- ray_submitted: tasks, cluster_gpus
- end: summary
- tune_* events of bench.sweep.tune: ladder, row, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Required, TypedDict


class ProgressEvent(TypedDict, total=False):
    type: Required[str]
    run_dir: str
    points: int | None
    skipped: int
    groups: int
    executor: str
    requests: int
    message: str
    server: dict[str, Any]
    server_hash: str
    pid: int | None
    restart: bool
    startup_s: float
    error: str
    index: int
    point: Any  # bench.config.sweep.Point
    ok: bool
    row: dict[str, Any]
    skipped_requests: int
    tasks: int
    cluster_gpus: float
    summary: Any  # bench.sweep.run.RunSummary
    ladder: dict[str, Any]
    timing: dict[str, Any]


ProgressFn = Callable[[ProgressEvent], None]


def ignore(_: ProgressEvent) -> None:
    """The progress callback when nobody listens."""
