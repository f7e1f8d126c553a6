"""SLO-constrained tuning: the best configuration (e.g. cheapest $/M output tokens) that meets a latency SLO.

Why not measure the grid: on real hardware every point costs minutes and every server config a
restart. Within one server config and workload, latency grows with load (concurrency or request
rate) while throughput grows and $/M tokens falls until the server saturates. So the best point of a
"ladder" (one server config, one workload, one load kind, loads in increasing order) is its highest
load that still meets the SLO: the knee. The search brackets each ladder's knee (every load up to `lo`
meets the SLO, every load from `hi` misses it) with as few measurements as the engine's physics allow:

- the batch limit: a closed loop of c requests runs at most `batch_slots` of them at once (max_num_seqs per
  engine); past 2 x slots the rest only queue, so no higher load can beat that one by more than noise, and
  loads above it are never measured (`saturation_index`);
- the first probe of a concurrency ladder is the first load that fills the batch (where queueing starts, so
  where a TTFT SLO's knee tends to be): `batch_guess`. A later ladder starts one load above the last knee
  found, unless that knee sat at its own batch limit (then this ladder's batch limit);
- twins: two configs that differ only in max_num_seqs run the same point at a load that fills neither batch,
  so a load measured for one settles the same load of the other (`twin_rows`: it moves `lo` or `hi` before
  anything is measured);
- larger batches first: ladders are searched in decreasing `batch_slots` (each server's ladders together),
  because their best usually wins and a strong incumbent lets the bounds below end the smaller ladders early;
- interpolation: from the ladder's measured loads the next probe is the highest load the SLO metrics' trend
  says meets the SLO (`predicted_knee`: a straight line between the loads that bracket the limit, in
  proportion to the load below every load that misses it, extrapolated from the two highest loads that meet
  it); a single load that meets it gallops up (+1, +3, +7, ...), as the search did before;
- the ceiling: with an incumbent, once a ladder has a feasible load and no infeasible one, its top load comes
  next: it either meets the SLO (the ladder's best) or bounds every load below it;
- a server that fails to start (its row's error says so) ends its ladder after one point;
- bound from below: throughput per unit of load does not grow with load (a closed loop of c requests
  delivers at most c/c0 times what c0 did, an open loop at most its offered rate), so a feasible point
  at load L0 with objective v bounds every higher load L of its ladder by v x L/L0 (v x L0/L for a cost
  per token). Loads whose bound cannot reach the incumbent are not measured;
- bound from above: the objective improves with load along a ladder, so an infeasible point's
  objective bounds every feasible (lower) load of its ladder; when it cannot reach the incumbent, the
  ladder is done.
"Reach" means beat the incumbent's value, or only tie with it (reach its 95% interval) when the ladder's
server is cheaper per hour, since a tie goes to the cheaper server (`best_row`).
A ladder left early reports the highest load known to meet the SLO as its knee and `pruned`.
Each probe only orders the measurements: the bracket moves by what is measured, so a wrong guess costs points,
never the answer.

The assumptions: monotonic feasibility along a ladder (if load L misses the SLO, every higher load
misses it too), an objective that improves with load up to the knee, and the throughput bound above.
A failed or partial point (errors, timeouts) counts as missing the SLO and bounds nothing.
`verify=True` also measures the rest of the grid and reports whether the search found the grid's
best, which is how to check the assumptions on a new engine or hardware.

Measurement noise: two points whose objective intervals overlap (scaled from the 95% throughput interval
of each row, bench/measure/intervals.py) are tied, and the cheaper server per hour is preferred among them;
the search found the grid's best when its pick is tied with it.

The SLO is on aggregate point metrics, in the one syntax of bench.config.slo: `ttft_ms_p99<=2000,tpot_ms_p50<=50`
means the point's p99 TTFT is at most 2000 ms and its median TPOT at most 50 ms (bench/measure/metrics.py
defines them); a term without `_pNN` is read at p90.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.slo import Slo, parse_slo
from bench.config.sweep import Point, Sweep
from bench.errors import UserInputError
from bench.sweep.events import ProgressFn, ignore
from bench.sweep.ladders import (
    Ladder,
    batch_guess,
    batch_slots,
    ladders,
    load_value,
    predicted_knee,
    twin_rows,
)
from bench.sweep.prepare import RunPlan
from bench.sweep.pricing import Pricing
from bench.sweep.rows import server_start_failed

Row = dict[str, Any]
MeasureFn = Callable[[int, Point], Row]

# objective -> direction; the cost objectives are $ per million tokens at the point's measured throughput
OBJECTIVES: dict[str, str] = {
    "usd_per_m_output": "min", "usd_per_m_total": "min",
    "output_tok_s_per_gpu": "max", "total_tok_s_per_gpu": "max", "output_tok_s": "max", "total_tok_s": "max",
    "goodput_req_s": "max", "request_throughput": "max",
}
def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserInputError(f"--objective must be one of {', '.join(OBJECTIVES)} (got {objective!r})")
    return objective


def feasible(row: Row, constraints: Slo) -> bool:
    """A point meets the SLO when it finished cleanly and every term holds (bench.config.slo)."""
    return row.get("status") == "ok" and constraints.met_by(row)


def objective_value(row: Row, objective: str) -> float | None:
    v = row.get(objective)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


# objective -> the measured rate whose 95% interval (row columns <rate>_ci_lo/_hi) bounds it, and how the objective
# moves with that rate: +1 in proportion, -1 inversely ($/M tokens = $/GPU-hour / rate). goodput_req_s has none.
RATE_OF: dict[str, tuple[str, int]] = {
    "usd_per_m_output": ("output_tok_s", -1), "usd_per_m_total": ("total_tok_s", -1),
    "output_tok_s_per_gpu": ("output_tok_s", 1), "total_tok_s_per_gpu": ("total_tok_s", 1),
    "output_tok_s": ("output_tok_s", 1), "total_tok_s": ("total_tok_s", 1),
    "request_throughput": ("request_throughput", 1),
}


def objective_interval(row: Row, objective: str) -> tuple[float, float] | None:
    """The objective's 95% interval, scaled from its throughput's (None: the row has none)."""
    v = objective_value(row, objective)
    if v is None or objective not in RATE_OF:
        return None
    col, direction = RATE_OF[objective]
    rate, lo, hi = (objective_value(row, c) for c in (col, f"{col}_ci_lo", f"{col}_ci_hi"))
    if rate is None or lo is None or hi is None or rate <= 0:
        return None
    if direction > 0:
        return v * lo / rate, v * hi / rate
    return v * rate / hi if hi > 0 else math.inf, v * rate / lo if lo > 0 else math.inf


def tied(a: Row, b: Row, objective: str) -> bool:
    """Two rows are tied on the objective when their 95% intervals overlap (equal values without intervals)."""
    ia, ib = objective_interval(a, objective), objective_interval(b, objective)
    if ia is None or ib is None:
        return objective_value(a, objective) == objective_value(b, objective)
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def hourly_cost(row: Row) -> float:
    """$ per hour of the row's server (gpu_count x usd_per_gpu_hour); inf when unknown."""
    n, usd = objective_value(row, "gpu_count"), objective_value(row, "usd_per_gpu_hour")
    return n * usd if n is not None and usd is not None else math.inf


def best_row(rows: list[Row], constraints: Slo, objective: str) -> Row | None:
    """The feasible row with the best objective; None when none is feasible.

    Rows whose objective interval overlaps the best one's (measurement noise cannot tell them apart) are
    tied with it: among them the cheapest server per hour wins, then the better value, then the first row.
    """
    sign = 1.0 if OBJECTIVES[objective] == "min" else -1.0
    cands = [r for r in rows if objective_value(r, objective) is not None and feasible(r, constraints)]
    if not cands:
        return None
    best = min(cands, key=lambda r: sign * objective_value(r, objective))  # type: ignore[operator]
    return min((r for r in cands if tied(r, best, objective)),
               key=lambda r: (hourly_cost(r), sign * objective_value(r, objective)))  # type: ignore[operator]


def bisect_ladder(ladder: Ladder, measure: MeasureFn, constraints: Slo, objective: str | None = None,
                  incumbent: Row | None = None, guess: int | None = None,
                  known: dict[int, Row] | None = None) -> list[Row]:
    """Find the ladder's knee by bisection, skipping what cannot beat `incumbent`; returns the rows it measured.

    Invariant: every index <= lo is feasible (lo = -1: none known), every index >= hi is not; only the first
    `ladder.searched` loads are searched (the batch limit). `known` (twins' rows, `twin_rows`) places lo and hi
    before anything is measured. Each measured index moves one bound. With an incumbent (and `objective`), only
    indices in [first_hopeful, hi) are searched (module docstring: the bounds). The probe: the predicted knee
    (`predicted_knee`) once the ladder has a load over the SLO or two under it; before that `guess`, galloping
    from it (guess +- 1, 3, 7, ...: up while feasible, down while not); with an incumbent and nothing known to
    miss, the top load (the ceiling); else the midpoint.
    """
    lo, hi = -1, ladder.searched
    rows: list[Row] = []
    lo_row: Row | None = None
    for i, row in sorted((known or {}).items()):  # twins' rows (`twin_rows`) place the bounds before any measurement
        if i < hi and feasible(row, constraints):
            lo, lo_row = i, row
        elif i < hi and row.get("status") == "ok":
            hi = max(i, lo + 1)
    seen = [(i, r) for i, r in (known or {}).items() if r.get("status") == "ok"]
    probe, sign, hop = guess, 0, 1
    while hi - lo > 1:
        first = lo + 1
        if incumbent is not None and objective is not None:
            if rows and not feasible(rows[-1], constraints) and not _may_reach(rows[-1], incumbent, objective):
                ladder.pruned = True  # its best feasible load is no better than this infeasible one: done
                break
            first = _first_hopeful(ladder, lo, hi, lo_row, incumbent, objective)
            if first >= hi:
                ladder.pruned = lo < hi - 1  # loads left unmeasured: none could beat the incumbent
                break
        # the trend, unless the last point told nothing (failed: no metrics, so the trend would only repeat itself)
        knee = predicted_knee(ladder, seen, constraints) if not rows or rows[-1].get("status") == "ok" else None
        if knee is not None:  # the highest load the measured trend says meets the SLO (at least the next one up)
            low = max(first, lo + 1)
            inside = [i for i in range(low, hi) if load_value(ladder.points[i][1]) <= knee]
            mid = inside[-1] if inside else low
        elif probe is not None and first <= probe < hi and probe > lo:
            mid = probe
        elif incumbent is not None and hi == ladder.searched and lo >= 0:
            mid = hi - 1  # the ceiling: if even the top load misses and cannot win, the ladder is done
        else:
            mid = (first - 1 + hi) // 2
        row = measure(*ladder.points[mid])
        rows.append(row)
        if server_start_failed(row):
            ladder.server_failed = True  # no load of this ladder can be measured
            break
        if row.get("status") == "ok":
            seen.append((mid, row))
        ok = feasible(row, constraints)
        if ok:
            lo, lo_row = mid, row
        else:
            hi = mid
        if probe is not None and mid == probe and (sign == 0 or (sign > 0) == ok):  # gallop on
            sign = sign or (1 if ok else -1)
            probe, hop = guess + sign * (2 * hop - 1), hop * 2  # type: ignore[operator]
        else:
            probe = None  # bracketed (or the gallop left the range): bisect
    ladder.measured = len(rows)
    ladder.knee = load_value(ladder.points[lo][1]) if lo >= 0 else None
    return rows


def _better(a: float, b: float, objective: str) -> bool:
    return a < b if OBJECTIVES[objective] == "min" else a > b


def _reach_limit(incumbent: Row, objective: str, ladder_row: Row) -> float:
    """The value a point of `ladder_row`'s ladder must reach to win: the incumbent's value, or the worse end of
    its 95% interval when this ladder's server is cheaper per hour (a tie goes to the cheaper server)."""
    value = objective_value(incumbent, objective)
    assert value is not None
    ci = objective_interval(incumbent, objective)
    if ci is None or hourly_cost(ladder_row) >= hourly_cost(incumbent):
        return value
    return ci[1] if OBJECTIVES[objective] == "min" else ci[0]


def _may_reach(bound_row: Row, incumbent: Row, objective: str) -> bool:
    """Whether a value no better than `bound_row`'s may still reach the incumbent (unknown: True)."""
    v = objective_value(bound_row, objective)
    if v is None or bound_row.get("status") != "ok":
        return True
    limit = _reach_limit(incumbent, objective, bound_row)
    return v == limit or _better(v, limit, objective)


def _first_hopeful(ladder: Ladder, lo: int, hi: int, lo_row: Row | None, incumbent: Row, objective: str) -> int:
    """The lowest index in (lo, hi) whose throughput bound from the feasible row at `lo` reaches the incumbent."""
    v0 = objective_value(lo_row, objective) if lo_row is not None else None
    if v0 is None or v0 <= 0:
        return lo + 1
    l0 = load_value(ladder.points[lo][1])
    limit = _reach_limit(incumbent, objective, lo_row)
    for i in range(lo + 1, hi):
        scale = load_value(ladder.points[i][1]) / l0
        bound = v0 / scale if OBJECTIVES[objective] == "min" else v0 * scale
        if bound == limit or _better(bound, limit, objective):
            return i
    return hi


def _guess(ladder: Ladder, before: list[Ladder], incumbent: Row | None) -> int | None:
    """A later ladder's first probe: the load just above the knee of the last ladder searched to its knee (same
    load kind), else just above the incumbent's load; this ladder's own batch limit (`batch_guess`) when that knee
    sat at or past its ladder's batch limit (the limit placed it, not the SLO) or when nothing is known yet; its
    lowest load once ladders were measured and none met the SLO (missing there ends it: one point).

    Why one above the knee and not the knee itself: configs that differ in something else than their batch
    saturate near each other, so that load likely misses the SLO, and a load that misses it bounds the whole
    ladder (the objective improves with load): when even that bound cannot reach the incumbent the ladder is done
    after one point; when it can, the next probe pins the knee, as probing the knee first would."""
    done = [lad for lad in before if lad.load_kind == ladder.load_kind and lad.knee and not lad.pruned]
    if done and ladder.load_kind == "concurrency" and done[-1].knee >= batch_slots(done[-1].points[0][1]) \
            and (batch := batch_guess(ladder)) is not None:
        return batch  # that knee sat at its batch limit, so the limit placed it, not the SLO: use this ladder's
    target = done[-1].knee if done else None
    if target is None and incumbent is not None:
        target = objective_value(incumbent, ladder.load_kind)
    if target is None:
        # nothing met the SLO so far: the lowest load first (if it misses, so does the whole ladder: one point)
        if incumbent is None and any(lad.measured and not lad.server_failed for lad in before):
            return 0
        return batch_guess(ladder)
    loads = [load_value(p) for _, p in ladder.points[:ladder.searched]]
    knee = min(range(len(loads)), key=lambda i: (abs(math.log(loads[i] / target)) if target > 0 else 0, -i))
    return min(knee + 1, len(loads) - 1)


@dataclass
class TuneResult:
    constraints: Slo
    objective: str
    best: Row | None
    grid_size: int
    points_measured: int  # by the search
    ladders: list[Ladder]
    rows: list[Row] = field(default_factory=list)  # every measured row, search then verification
    verify_measured: int = 0
    grid_best: Row | None = None
    found_grid_best: bool | None = None  # None: not verified
    # a point with a strictly better objective was measured (by the search, or the verification), and the pick
    # stands only because their 95% intervals overlap (`tied`): the noise, not the value, decided
    tie_decided: bool = False
    run_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": [str(t) for t in self.constraints.terms], "objective": self.objective,
            "direction": OBJECTIVES[self.objective], "best": self.best, "grid_size": self.grid_size,
            "points_measured": self.points_measured, "verify_measured": self.verify_measured,
            "found_grid_best": self.found_grid_best, "tie_decided": self.tie_decided, "grid_best": self.grid_best,
            "ladders": [lad.describe() for lad in self.ladders], "run_dir": str(self.run_dir) if self.run_dir else None,
            "rows": self.rows,
        }


def tune(sweep: Sweep, constraints: Slo, objective: str, measure: MeasureFn,
         verify: bool = False, progress: ProgressFn | None = None, points: list[Point] | None = None) -> TuneResult:
    """Bisect every ladder toward its SLO knee and pick the best feasible point by `objective`.

    `measure(point_index, point)` returns the point's row (the session's, or a fake in tests). Ladders
    of one server config are searched back to back, and with `verify` the rest of that config's grid
    is measured before moving on, so a real server is started once per config either way.
    """
    check_objective(objective)
    emit = progress or ignore
    lads = ladders(sweep, points)
    by_id = {p.point_id: p for lad in lads for _, p in lad.points}
    grid = sum(len(lad.points) for lad in lads)
    search_rows: list[Row] = []
    verify_rows: list[Row] = []
    for i, lad in enumerate(lads):
        incumbent = best_row(search_rows, constraints, objective)
        guess = _guess(lad, lads[:i], incumbent) if search_rows else batch_guess(lad)
        rows = bisect_ladder(lad, measure, constraints, objective, incumbent, guess, twin_rows(lad, search_rows, by_id))
        search_rows += rows
        emit({"type": "ladder_done", "ladder": lad.describe()})
        last_of_server = i + 1 == len(lads) or lads[i + 1].server_hash != lad.server_hash
        if verify and last_of_server:
            seen = {r["point_id"] for r in search_rows + verify_rows}
            for other in (x for x in lads if x.server_hash == lad.server_hash):
                for idx, p in other.points:
                    if p.point_id not in seen:
                        verify_rows.append(measure(idx, p))
    best = best_row(search_rows, constraints, objective)
    result = TuneResult(constraints, objective, best, grid, len(search_rows), lads,
                        rows=search_rows + verify_rows, verify_measured=len(verify_rows))
    if verify:
        result.grid_best = best_row(search_rows + verify_rows, constraints, objective)
        if result.grid_best is None:
            result.found_grid_best = best is None
        else:
            result.found_grid_best = best is not None and tied(best, result.grid_best, objective)
    result.tie_decided = _beaten_by(best, result.rows, constraints, objective)
    return result


def _beaten_by(best: Row | None, rows: list[Row], constraints: Slo, objective: str) -> bool:
    """Whether a feasible row has a strictly better objective than `best` (which then won, or matched, by a tie)."""
    v = objective_value(best, objective) if best is not None else None
    if v is None:
        return False
    return any(feasible(r, constraints) and (w := objective_value(r, objective)) is not None
               and _better(w, v, objective) for r in rows)


def run_tune(sweep: Sweep | RunPlan, slo: str | Slo, objective: str = "usd_per_m_output",
             out_root: Path = Path("results"), resume: Path | None = None, verify: bool = False,
             progress: ProgressFn | None = None, pricing: Pricing | None = None) -> TuneResult:
    """`tune` on the real engine: points are measured by a GroupSession (bench.sweep.session) into a normal run dir.

    `sweep` is a RunPlan from `prepare` (the same checks as `run`), or a Sweep prepared here with
    `resume` and `pricing`. With `resume`, points that already have a row in that run dir are reused.
    """
    from bench.sweep.envinfo import has_nvidia_gpu
    from bench.sweep.prepare import prepare
    from bench.sweep.run import open_run
    from bench.sweep.session import GroupSession

    constraints = parse_slo(slo) if isinstance(slo, str) else slo  # bench.config.slo syntax
    check_objective(objective)
    plan = sweep if isinstance(sweep, RunPlan) else prepare(sweep, resume, "local", pricing)
    sweep, rate = plan.sweep, plan.rate
    emit = progress or ignore
    store, warning = open_run(plan, out_root, emit=emit)
    if warning:
        emit(warning)
    done = {r["point_id"]: r for r in store.rows()}
    on_gpu = has_nvidia_gpu()
    current: list[GroupSession] = []

    def measure(idx: int, point: Point) -> Row:
        if point.point_id in done:
            return done[point.point_id]
        if not current or current[0].spec.server_hash != point.server_hash:
            if current:
                current.pop().close()
            current.append(GroupSession(sweep, point.server, store, rate, on_gpu, emit, cost=plan.pricing.cost_columns))
        row = current[0].measure(idx, point)
        done[point.point_id] = row
        return row

    emit({"type": "start", "run_dir": str(store.dir), "points": len(plan.points), "skipped": 0,
          "requests": 0})
    try:
        result = tune(sweep, constraints, objective, measure, verify=verify, progress=emit, points=plan.points)
    finally:
        try:
            if current:
                current.pop().close()
        finally:
            store.unlock()  # the run is over: the directory may be resumed
    result.run_dir = store.dir
    return result
