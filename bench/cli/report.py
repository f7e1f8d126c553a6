"""The `report` command: plumbing to bench.report.build_report and a short summary on the terminal."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.cli.money_options import U_HELP, pct
from bench.cli.output import print_json, print_table, say
from bench.econ.cost import DEFAULT_UTILIZATION


def report(
    runs: list[Path] = typer.Argument(..., help="One or more results/<run_id> directories (several = compare)."),
    price: str | None = typer.Option(
        None, "--price", help="Price-book entry <model>@<provider> (default: the model's, or its twin's, entry)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default reports/<run_id>)."),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=U_HELP),
    slo: list[str] = typer.Option(
        [], "--slo", help="Latency tier [name:]metric[_pNN]<=ms,... (default p90), e.g. "
        "'chat:ttft_ms<=500,tpot_ms_p99<=30'; repeat. Default: a ladder."
    ),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print the headline and paths as JSON."),
) -> None:
    """The cost report: report.md, a self-contained report.html and PNG figures."""
    from bench.cli.money_options import require_finite
    from bench.config.slo import parse_slo
    from bench.report import build_report

    require_finite(utilization=utilization, usd_per_cny=usd_per_cny)
    if out is not None:
        from bench.sweep.store import check_output_dir

        check_output_dir(out)
    res = build_report(runs, out, price=price, utilization=utilization,
                       slos=[parse_slo(s) for s in slo] or None, usd_per_cny=usd_per_cny)
    if json_out:
        print_json(res.to_dict())
        return
    rows = [{"slo": h["slo_text"], "point": h.get("point_id") or "none meets it",
             "cost_usd_per_m_output_tokens": h.get("cost_usd_per_m_output_tokens"),
             "cached_share": h.get("cached_share"),
             "gross_margin": h.get("gross_margin"), "break_even_utilization": h.get("break_even_utilization")}
            for h in res.headline]
    print_table(f"Cheapest configuration per SLO (every figure at U={utilization:g}, at each point's cache share)",
                pct(rows))
    if res.exchange_rate:
        fx = res.exchange_rate
        say(f"CNY prices converted at {fx['usd_per_cny']:g} USD/CNY (as of {fx['as_of'] or 'undated'}; "
            f"{fx['source']})")
    for w in res.warnings:
        say(w, prefix="warning: ", prefix_style="yellow")
    say(f"wrote {res.markdown_path}, {res.html_path} and {len(res.figures)} figures")
