"""The cost report: Markdown + one self-contained HTML file + PNG figures, from one or more runs.

Who reads it: the MaaS team forwards it to finance, so it answers "what does a million tokens cost
at each latency target, and what margin does that give at today's prices" and says plainly when a
number must not be read as a GPU number (a CPU run, failed points, unverified token counts).

What it does and does not do: it reads the results a run wrote (bench.sweep.store) and never recomputes a
metric. Every money figure (tables, sentences, figures) comes from one bench.econ.margin.Offer per point,
the same one `maas-bench margin --results` prints: the point's measured mix and cache share, each measured
request at its own price tier, its GPU rate, at the report's utilization U (default the same as `cost`,
`margin` and `plan`: bench.econ.cost.DEFAULT_UTILIZATION). U and the cache share stand beside every money
figure, and the exchange rate (with its date and source) beside every CNY price. Figures:
  (a) output tok/s per GPU vs interactivity (tok/s/user), Pareto frontier per series (quantization);
  (b) $/M output tokens at U vs interactivity;
  (c) TTFT and TPOT percentiles vs concurrency (or request rate);
  (d) gross margin vs fleet utilization at a price-book entry, break-even marked;
  (e) the runs passed in side by side (e.g. BF16 vs INT8).

Modules: data (points + economics + SLO tiers), tables, figures, render (templates); this one wires
them together.

A tiny catalog twin (e.g. glm-4.5-tiny) has no price of its own: by default it is priced as the
real model it stands for (catalog `twin_of`), at the first provider of DEFAULT_PROVIDER_ORDER that
lists it, and the report says so.
"""


from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config.slo import Slo
from bench.econ.cost import DEFAULT_UTILIZATION
from bench.errors import UserInputError
from bench.report.data import (
    collect_warnings,
    comparison_slo,
    headline,
    headline_caveats,
    load_column,
    load_run,
    load_run_requests,
    margin_curves,
    point_economics,
    resolve_prices,
    series_labels,
    slo_ladder,
)
from bench.report.figures import (
    FIGURES,
    fig_cache_margin,
    fig_cost,
    fig_latency,
    fig_margin,
    fig_runs,
    fig_spec,
    fig_throughput,
    has_speculation,
)
from bench.report.render import render_template, write_atomic
from bench.report.tables import (
    fmt_int,
    headline_sentences,
    headline_table,
    load_short,
    load_text,
    method_lines,
    point_table,
    price_text,
    provenance,
)

DEFAULT_REPORTS_ROOT = Path("reports")


# --- the report -------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What `build_report` wrote and the numbers it led with."""

    out_dir: Path
    markdown_path: Path
    html_path: Path
    figures: dict[str, Path]
    headline: list[dict[str, Any]]
    warnings: list[str]
    price_notes: list[str]
    points: int
    runs: list[str] = field(default_factory=list)
    utilization: float = DEFAULT_UTILIZATION
    exchange_rate: dict[str, Any] | None = None  # set when a CNY price was converted

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "markdown": str(self.markdown_path), "html": str(self.html_path),
                "figures": {k: str(v) for k, v in self.figures.items()}, "runs": self.runs, "points": self.points,
                "utilization": self.utilization, "exchange_rate": self.exchange_rate,
                "headline": self.headline, "warnings": self.warnings, "price_notes": self.price_notes}


def default_out_dir(run_ids: Sequence[str], root: Path = DEFAULT_REPORTS_ROOT) -> Path:
    """reports/<run_id>, or reports/<first>+<n>more for a comparison."""
    name = run_ids[0] if len(run_ids) == 1 else f"{run_ids[0]}+{len(run_ids) - 1}more"
    return Path(root) / name


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    price: str | None = None,
    utilization: float = DEFAULT_UTILIZATION,
    slos: Sequence[Slo] | None = None,
    usd_per_cny: float | None = None,
) -> ReportResult:
    """Write report.md, report.html (images embedded) and the figure PNGs into `out_dir`.

    `price` (`<model>@<provider>`) prices every model; by default each model gets its own (or its
    twin's) entry. `utilization` is the fleet utilization every money figure is quoted at (default the
    one `cost`, `margin` and `plan` use; 1.0 = the fully loaded server the benchmark measured; figure (d)
    shows the rest).
    """
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import bounds
    from bench.econ.queries import fx_rate

    if not run_dirs:
        raise UserInputError("report: give at least one results/<run_id> directory")
    bounds.check("utilization", utilization, "--utilization")
    bounds.check("usd_per_cny", usd_per_cny, "--usd-per-cny")
    runs, frames = [], []
    for d in run_dirs:
        info, df = load_run(d)
        if info.run_id in {r.run_id for r in runs}:
            raise UserInputError(f"report: run {info.run_id} was given twice")
        runs.append(info)
        frames.append(df)
    points = pd.concat(frames, ignore_index=True, sort=False)
    if points.empty:
        raise UserInputError(f"report: {', '.join(str(r.run_dir) for r in runs)} has no points yet")
    for col in ("status", "model", "quantization", "usd_per_m_output", "completed"):
        if col not in points:
            points[col] = None
    rate = fx_rate(load_hardware(), usd_per_cny)
    fx = rate.usd_per_cny if rate is not None else None
    book = load_price_book()
    models = [str(m) for m in points["model"].dropna().unique()]
    prices = resolve_prices(models, price, book)
    points["series"] = series_labels(points)
    points["load_x"], load_label = load_column(points)
    recs = points.to_dict("records")
    points["load_short"] = [load_short(r) for r in recs]
    points["load"] = [load_text(r) for r in recs]
    points["done"] = [f"{fmt_int(r.get('completed'))}/{fmt_int(r.get('num_requests'))}" for r in recs]
    requests = {r.run_id: load_run_requests(r, points.loc[points["run_id"] == r.run_id, "point_id"].dropna().astype(str)
                                            .tolist()) for r in runs}
    econ, offers = point_economics(points, prices, utilization, fx, requests)
    points = points.merge(econ, on=["run_id", "point_id"], how="left")
    slo_list = slo_ladder(points, slos)
    head = headline(points, slo_list)
    warnings = collect_warnings(points, runs, prices)

    out = Path(out_dir) if out_dir is not None else default_out_dir([r.run_id for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    figs["a"] = fig_throughput(points, out / FIGURES["a"][0])
    figs["b"] = fig_cost(points, out / FIGURES["b"][0], utilization)
    figs["c"] = fig_latency(points, out / FIGURES["c"][0], load_label, slo_list)
    curves, curve_note = margin_curves(points, head, prices, offers)
    figs["d"] = fig_margin(curves, out / FIGURES["d"][0], curve_note)
    figs["e"] = fig_runs(points, out / FIGURES["e"][0], comparison_slo(points, slo_list), utilization)
    figs["cache"] = fig_cache_margin(points, out / FIGURES["cache"][0], utilization)
    if has_speculation(points):  # only runs with a speculative point get the with/without figure
        figs["spec"] = fig_spec(points, out / FIGURES["spec"][0])

    price_notes = [c.note for c in prices.values() if c.entry is not None]
    cny = False
    for c in prices.values():
        if c.entry is not None:
            price_notes.append(f"{c.key}: {price_text(c.entry)} (as of {c.entry.as_of}; {c.entry.source}).")
            if c.entry.currency == "CNY" and rate is not None:
                cny = True
                price_notes.append(f"{c.key} is priced in CNY: converted to USD at {rate.text()}.")
    ctx = {
        "title": "Cost report: " + ", ".join(r.run_id for r in runs),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": [provenance(r, points) for r in runs],
        "headline_table": headline_table(head, utilization),
        "headline_sentences": headline_sentences(head, utilization, rate if cny else None),
        "headline_caveats": headline_caveats(points, runs),
        "price_notes": price_notes,
        "utilization": utilization,
        "warnings": warnings,
        "point_table": point_table(points, utilization),
        "figures": [{"key": k, "file": FIGURES[k][0], "caption": FIGURES[k][1], "path": figs[k]}
                    for k in FIGURES if k in figs],
        "method": method_lines(utilization),
    }
    md_path = out / "report.md"
    html_path = out / "report.html"
    write_atomic(md_path, render_template("report.md.j2", ctx, autoescape=False))
    for f in ctx["figures"]:
        f["data_uri"] = "data:image/png;base64," + base64.b64encode(f["path"].read_bytes()).decode()
    write_atomic(html_path, render_template("report.html.j2", ctx, autoescape=True))
    return ReportResult(out, md_path, html_path, figs, head, warnings, price_notes, len(points),
                        [r.run_id for r in runs], utilization, rate.to_dict() if cny and rate is not None else None)


