"""The catalog commands: `catalog` (list runs), `query` (SQL over every point) and `compare` (the comparison
page). Argument plumbing and printing only; the work is in bench.report.catalog, catalog_query and compare."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import typer

from bench.cli.money_options import U_HELP, pct, require_finite
from bench.cli.output import print_json, print_table, say
from bench.econ.cost import DEFAULT_UTILIZATION

ROOTS_HELP = "Results roots to search for runs (nested folders too). Default: results/."
TIER_HELP = ("Price every point's GPU-hour at this tier of configs/hardware.yaml (owning-neocloud, on-demand, "
             "tco, ...). Default: each run's own $/GPU-hour.")
PRICE_HELP = ("Price-book entry <model>@<provider> for every point's revenue and margin. Default: each model's own "
              "entry (a tiny twin: its real model's).")


def _pricing(tier: str | None, utilization: float, price: str | None, usd_per_cny: float | None):  # noqa: ANN202
    from bench.report.catalog_query import CatalogPricing

    require_finite(utilization=utilization, usd_per_cny=usd_per_cny)
    return CatalogPricing(utilization=utilization, tier=tier, price=price, usd_per_cny=usd_per_cny).check()


def _warn(lines: list[str]) -> None:
    for w in dict.fromkeys(lines):
        say(w, err=True, prefix="warning: ", prefix_style="yellow")


def catalog(
    roots: list[Path] = typer.Argument(None, help=ROOTS_HELP, show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """List every run under the results roots: id, sweep, model, GPU, engine, source, ok/failed points, date."""
    from bench.report.catalog import list_runs, load_catalog

    cat = load_catalog(roots or None)
    runs = list_runs(cat)
    _warn(cat.warnings)
    if json_out:
        print_json(runs)
        return
    print_table(f"{len(runs)} runs, {cat.num_rows} points ({', '.join(str(r) for r in cat.roots)})", runs)


def query(
    sql: str = typer.Argument(..., help="One read-only SELECT (or WITH ... SELECT) over the `points` view."),
    roots: list[Path] = typer.Argument(None, help=ROOTS_HELP, show_default=False),
    tier: str | None = typer.Option(None, "--tier", help=TIER_HELP),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=U_HELP),
    price: str | None = typer.Option(None, "--price", help=PRICE_HELP),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print the result rows as JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print the result rows as CSV."),
) -> None:
    """SQL over every point of every run: the `points` view has every results column, `source`, `run_dir`,
    `results_root`, `sweep_name` and the cost and margin columns at --tier, --utilization and --price."""
    from bench.errors import UserInputError
    from bench.report.catalog import load_catalog
    from bench.report.catalog_query import check_read_only, run_query

    if json_out and csv_out:
        raise UserInputError("query: give --json or --csv, not both")
    check_read_only(sql)  # before any file is read
    pricing = _pricing(tier, utilization, price, usd_per_cny)
    cat = load_catalog(roots or None)
    res = run_query(cat, sql, pricing)
    _warn(cat.warnings + pricing.notes)
    if json_out:
        print_json(res.records())
    elif csv_out:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(res.columns)
        w.writerows(["" if v is None else v for v in r] for r in res.rows)
    else:
        print_table(f"{len(res.rows)} rows (money at U={utilization:g}, tier {tier or 'of each run'})",
                    pct(res.records()))


def compare(
    roots: list[Path] = typer.Argument(None, help=ROOTS_HELP, show_default=False),
    out: Path = typer.Option(..., "--out", help="Directory to write compare.html into."),
    tier: str | None = typer.Option(None, "--tier", help=TIER_HELP),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=U_HELP),
    price: str | None = typer.Option(None, "--price", help=PRICE_HELP),
    slo: list[str] = typer.Option(
        [], "--slo", help="SLO tier [name:]metric[_pNN]<=ms,... (default p90); repeat. Default: the report's "
        "ladder (interactive, standard, batch, and each run's own SLO)."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """One self-contained HTML page comparing every run: filters, the throughput-interactivity frontier,
    $/M output and margin, the cheapest configuration per SLO tier; every point links to its run."""
    from bench.config.slo import parse_slo
    from bench.report.compare import build_compare

    pricing = _pricing(tier, utilization, price, usd_per_cny)
    res = build_compare(roots or None, out, pricing=pricing, slos=[parse_slo(s) for s in slo] or None)
    _warn(res.warnings)
    if json_out:
        print_json(res.to_dict())
        return
    say(f"wrote {res.html_path}: {res.points} points of {res.runs} runs"
        + (f" ({res.skipped_points} failed or partial points left out)" if res.skipped_points else ""))
