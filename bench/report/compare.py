"""The comparison page: every run under one or more results roots on one self-contained HTML page.

Who reads it: someone choosing a configuration across a month of runs ("cheapest GLM on any GPU under
the interactive SLO"). The page (templates/compare.html.j2) filters the points by model, GPU,
quantization, engine, speculative decoding, workload and source, and redraws the throughput-per-GPU vs
interactivity frontier, the points table and the cheapest configuration per SLO tier from the filtered
points, in the browser (no server, no CDN: its JS, CSS and data are inline; the plot is SVG its own JS
draws).

What is computed here, once, and what the page does: every money figure ($/M output tokens, gross
margin) is bench.econ.margin's, priced by bench.report.catalog_query.money_rows at the tier, U and price
chosen when the page is built (stated on the page); whether a point meets each SLO tier is
bench.config.slo's `Slo.met_by`, shipped to the page as one flag per tier. The page only filters,
draws, takes minima and computes the frontier (a port of bench.report.pareto.pareto_front, checked
against it by tests/integration/report/test_compare_browser.py).

Every text from the data reaches the page as JSON (`<`, `>`, `&` escaped, so no `</script>` can end
the data block) and is put into the page with textContent / setAttribute, never as markup. Every point
links to its run folder by a path relative to the page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.config.slo import Slo
from bench.errors import UserInputError
from bench.report.catalog import Catalog, load_catalog
from bench.report.catalog_query import OFFER_INPUTS, CatalogPricing, money_rows
from bench.report.render import render_template, write_atomic
from bench.report.tables import load_short, quant_text, spec_text

PAGE_FILE = "compare.html"
# the filters, in page order: (key in the page's data, label)
FILTERS = (("model", "model"), ("gpu", "GPU"), ("quant", "quantization"), ("engine", "engine"),
           ("spec", "speculative"), ("workload", "workload"), ("source", "source"))
_POINT_COLUMNS = ("results_root", "run_dir", "run_id", "point_id", "model", "gpu_type", "gpu_count", "quantization",
                  "dtype", "engine", "spec_method", "spec_num_speculative_tokens", "spec_pinned_acceptance_length",
                  "spec_pinned_acceptance_rates", "workload", "source",
                  "concurrency", "request_rate", "output_tok_s_per_gpu", "interactivity_tok_s_user",
                  "ttft_ms_p90", "tpot_ms_p90", "slo_ttft_ms", "slo_tpot_ms")


@dataclass
class CompareResult:
    """What `build_compare` wrote."""

    html_path: Path
    points: int  # ok points on the page
    runs: int
    skipped_points: int  # failed or partial points (not on the page)
    slos: list[str]
    pricing: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"html": str(self.html_path), "points": self.points, "runs": self.runs,
                "skipped_points": self.skipped_points, "slos": self.slos, "pricing": self.pricing,
                "warnings": self.warnings}


def run_link(results_root: str, run_dir: str, out_dir: Path) -> str:
    """The run folder as a URL relative to the page (percent-encoded: a folder name is text, not markup)."""
    rel = os.path.relpath(Path(results_root).resolve() / run_dir, out_dir.resolve())
    return quote(Path(rel).as_posix() + "/")


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def page_data(catalog: Catalog, pricing: CatalogPricing, slos: Sequence[Slo] | None,
              out_dir: Path) -> dict[str, Any]:
    """The page's data: one column array per field over the ok points, the SLO tiers (each point's flags
    from Slo.met_by) and the pricing the money columns were computed at."""
    import pandas as pd

    from bench.report.data import slo_ladder

    own = catalog.read("SELECT DISTINCT slo_ttft_ms, slo_tpot_ms FROM cat WHERE status = 'ok' "
                       "ORDER BY slo_ttft_ms NULLS FIRST, slo_tpot_ms NULLS FIRST")
    ladder = slo_ladder(pd.DataFrame(own.to_pylist(), columns=["slo_ttft_ms", "slo_tpot_ms"]), slos)
    slo_cols = sorted({t.column for s in ladder for t in s.terms})
    cols = list(dict.fromkeys([*_POINT_COLUMNS, *OFFER_INPUTS, *slo_cols]))
    recs = catalog.read(f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM cat WHERE status = 'ok' "
                        "ORDER BY results_root, run_dir, point_index").to_pylist()
    skipped = catalog.num_rows - len(recs)
    money = money_rows(recs, pricing)
    links: dict[tuple[str, str], str] = {}
    data: dict[str, list[Any]] = {k: [] for k in (
        "run", "point", "link", "model", "gpu", "quant", "engine", "spec", "workload", "source", "load",
        "tok_s_gpu", "interactivity", "ttft_ms_p90", "tpot_ms_p90", "usd_per_m_output", "gross_margin", "slo")}
    for r, m in zip(recs, money, strict=True):
        where = (r["results_root"], r["run_dir"])
        if where not in links:
            links[where] = run_link(*where, out_dir)
        m = m or {}
        data["run"].append(r["run_id"])
        data["point"].append(r["point_id"])
        data["link"].append(links[where])
        data["model"].append(str(r.get("model") or "-"))
        data["gpu"].append(str(r.get("gpu_type") or "-") + (f" x{r['gpu_count']}" if (r.get("gpu_count") or 1) > 1
                                                             else ""))
        data["quant"].append(quant_text(r))
        data["engine"].append(str(r.get("engine") or "-"))
        data["spec"].append(spec_text(r))
        data["workload"].append(str(r.get("workload") or "-"))
        data["source"].append(str(r.get("source") or "-"))
        data["load"].append(load_short(r))
        data["tok_s_gpu"].append(_finite(r.get("output_tok_s_per_gpu")))
        data["interactivity"].append(_finite(r.get("interactivity_tok_s_user")))
        data["ttft_ms_p90"].append(_finite(r.get("ttft_ms_p90")))
        data["tpot_ms_p90"].append(_finite(r.get("tpot_ms_p90")))
        data["usd_per_m_output"].append(_finite(m.get("cost_usd_per_m_output_tokens")))
        data["gross_margin"].append(_finite(m.get("gross_margin")))
        data["slo"].append("".join("1" if s.met_by(r) else "0" for s in ladder))  # one flag per tier, in order
    return {
        "points": data,
        "filters": [{"key": k, "label": label} for k, label in FILTERS],
        "slos": _slo_rows(ladder),
        "pricing": pricing_text(pricing),
        "skipped_points": skipped,
        "runs": len(links),
    }


def _slo_rows(ladder: Sequence[Slo]) -> list[dict[str, str]]:
    """Label and text of each tier; a label two tiers share (two runs' own "sweep SLO") becomes its text."""
    labels = [s.label for s in ladder]
    out = []
    for s in ladder:
        text = s.describe() if s.name else f"{s.label}: {s.describe()}"
        out.append({"label": s.label if labels.count(s.label) == 1 else text, "text": text})
    return out


def pricing_text(pricing: CatalogPricing) -> dict[str, Any]:
    return {"utilization": pricing.utilization,
            "tier": pricing.tier or "each run's own $/GPU-hour (column usd_per_gpu_hour)",
            "price": pricing.price or "each model's own price-book entry (a tiny twin: its real model's)"}


def to_script_json(obj: Any) -> str:
    """JSON that can sit inside a <script> element: `<`, `>` and `&` escaped as \\u escapes, no NaN."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_compare(roots: Sequence[str | Path] | None, out_dir: str | Path, *, pricing: CatalogPricing | None = None,
                  slos: Sequence[Slo] | None = None) -> CompareResult:
    """Write `out_dir/compare.html` over every run under `roots` (default results/)."""
    pricing = (pricing or CatalogPricing()).check()
    catalog = load_catalog(roots)
    if catalog.num_rows == 0:
        raise UserInputError(f"compare: no run found under {', '.join(str(r) for r in catalog.roots)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out: {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    data = page_data(catalog, pricing, slos, out)
    ctx = {"title": "Run comparison: " + ", ".join(str(r) for r in catalog.roots),
           "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "pricing": data["pricing"], "n_points": len(data["points"]["run"]), "n_runs": data["runs"],
           "skipped": data["skipped_points"], "data_json": to_script_json(data)}
    path = out / PAGE_FILE
    write_atomic(path, render_template("compare.html.j2", ctx, autoescape=True))
    warnings = catalog.warnings + pricing.notes
    return CompareResult(path, len(data["points"]["run"]), data["runs"], data["skipped_points"],
                         [s["label"] for s in data["slos"]], data["pricing"], warnings)
