"""Report tables and text: number formatting, the point and headline tables, the plain-language
sentences and method notes. Pure functions of the assembled points (bench.report.data); no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.sweep.rows import row_source

# Point-table columns: (column, header, formatter name).
POINT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run_id", "run", "str"),
    ("point_id", "point", "str"),
    ("status", "status", "str"),
    ("series", "series", "str"),
    ("max_num_seqs", "max seqs", "int"),
    ("load", "load", "str"),
    ("done", "done", "str"),
    ("output_tok_s_per_gpu", "out tok/s/GPU", "num"),
    ("interactivity_tok_s_user", "tok/s/user", "num"),
    ("ttft_ms_p50", "TTFT p50 ms", "num"),
    ("ttft_ms_p90", "TTFT p90 ms", "num"),
    ("tpot_ms_p50", "TPOT p50 ms", "num"),
    ("tpot_ms_p90", "TPOT p90 ms", "num"),
    ("e2el_ms_p99", "E2EL p99 ms", "num"),
    ("cost_usd_per_m_output_tokens", "$/M output (U={u})", "usd"),
    ("cost_usd_per_m_tokens", "$/M input+output (U={u})", "usd"),
    ("spec_num_speculative_tokens", "spec K", "int"),
    ("spec_pinned_acceptance_length", "pinned accept len", "num"),
    ("spec_acceptance_length", "accept len", "num"),
    ("enable_prefix_caching", "prefix cache", "str"),
    ("cached_input_frac", "cache-hit rate", "pct"),
    ("cached_share", "cache share priced", "pct"),
    ("ttft_ms_p50_first_turn", "TTFT p50 turn 1 ms", "num"),
    ("ttft_ms_p50_later_turns", "TTFT p50 turns 2+ ms", "num"),
    ("revenue_usd_per_gpu_hour", "revenue $/GPU-h (U={u})", "usd"),
    ("cost_usd_per_gpu_hour", "cost $/GPU-h", "usd"),
    ("gross_margin", "gross margin (U={u})", "pct"),
    ("break_even_utilization", "break-even U", "pct"),
    ("j_per_output_token", "J/output tok", "num"),
)

# Point-table columns shown with their 95% confidence interval: column -> (interval figure, divisor column).
# The per-GPU rate's interval is the rate's divided by gpu_count, as the rate itself is (measure.metrics).
CI_OF: dict[str, tuple[str, str | None]] = {
    "output_tok_s_per_gpu": ("output_tok_s", "gpu_count"),
    **{c: (c, None) for c in ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "e2el_ms_p99")},
}


def with_interval(r: dict[str, Any], column: str, text: str) -> str:
    """`text` followed by the column's 95% interval, "123 [120, 126]", when the row has one."""
    if column not in CI_OF or text == "-":
        return text
    figure, per = CI_OF[column]
    lo, hi = finite_float(r.get(f"{figure}_ci_lo")), finite_float(r.get(f"{figure}_ci_hi"))
    div = finite_float(r.get(per)) if per else 1.0
    if lo is None or hi is None or not div:
        return text
    return f"{text} [{fmt_num(lo / div)}, {fmt_num(hi / div)}]"


def load_text(r: dict[str, Any]) -> str:
    c, q = finite_float(r.get("concurrency")), finite_float(r.get("request_rate"))
    if c is not None:
        return f"concurrency {int(c)}"
    if q is not None:
        return f"{q:g} req/s"
    return "-"


def load_short(r: dict[str, Any]) -> str:
    c, q = finite_float(r.get("concurrency")), finite_float(r.get("request_rate"))
    return f"c={int(c)}" if c is not None else (f"{q:g}/s" if q is not None else "-")


def quant_text(r: dict[str, Any]) -> str:
    """'fp8', or the dtype for an unquantized model ('bfloat16 (unquantized)')."""
    q = r.get("quantization")
    if q is None or str(q) in ("none", "None", "nan", ""):
        return f"{r.get('dtype') or 'unknown dtype'} (unquantized)"
    return str(q)


# --- formatting -------------------------------------------------------------------------------


def spec_text(r: dict[str, Any]) -> str:
    """A point's speculation: "no spec", "mtp K=3 L=2.5" (pinned acceptance length) or "ngram K=3"."""
    k = finite_float(r.get("spec_num_speculative_tokens"))
    if not k:
        return "no spec"
    pinned = finite_float(r.get("spec_pinned_acceptance_length"))
    rates = r.get("spec_pinned_acceptance_rates")
    tail = f" L={pinned:g}" if pinned is not None else (" rates" if isinstance(rates, str) else "")
    return f"{r.get('spec_method')} K={int(k)}{tail}"


def finite_float(v: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, strings)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_num(v: Any, digits: int = 4) -> str:
    f = finite_float(v)
    if f is None:
        return "-"
    if f != 0 and (abs(f) >= 1e6 or abs(f) < 1e-3):
        return f"{f:.3e}"
    if abs(f) >= 10 ** digits:
        return f"{f:,.0f}"
    return f"{f:.{digits}g}"


def _fmt_usd(v: Any) -> str:
    f = finite_float(v)
    return "-" if f is None else ("-$" if f < 0 else "$") + fmt_num(abs(f))


def _fmt_pct(v: Any) -> str:
    f = finite_float(v)
    return "-" if f is None else f"{f:.1%}"


def fmt_int(v: Any) -> str:
    f = finite_float(v)
    return "-" if f is None else str(int(f))


FORMATTERS = {"num": fmt_num, "usd": _fmt_usd, "pct": _fmt_pct, "int": fmt_int,
              "str": lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)}


@dataclass
class Table:
    """A rendered table: the templates lay it out as Markdown or HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]


def point_table(points: pd.DataFrame, utilization: float) -> Table:
    """Every point; money columns at U (in their headers) and at the cache share each was priced at."""
    cols = [c for c in POINT_COLUMNS if c[0] in points.columns]
    rows = [[with_interval(r, c, FORMATTERS[f](r.get(c))) for c, _, f in cols] for r in points.to_dict("records")]
    return Table("Points", [h.format(u=f"{utilization:g}") for _, h, _ in cols], rows)


def headline_table(rows: list[dict[str, Any]], utilization: float) -> Table:
    """Latency columns are read at each SLO's own percentile (p90 where it sets none)."""
    u = f"U={utilization:g}"
    cols = ["SLO", "cheapest configuration", f"$/M output ({u})", f"$/M input+output ({u})", "cache share",
            f"revenue $/GPU-h ({u})", "cost $/GPU-h", f"gross margin ({u})",
            "break-even utilization", "out tok/s/GPU", "tok/s/user", "TTFT ms (SLO pct)", "TPOT ms (SLO pct)"]
    out = []
    for r in rows:
        if r["point_id"] is None:
            seen = (f"no configuration meets it (best seen: TTFT {fmt_num(r.get('best_ttft_ms'))} ms, "
                    f"TPOT {fmt_num(r.get('best_tpot_ms'))} ms)")
            out.append([r["slo_text"], seen] + ["-"] * (len(cols) - 2))
            continue
        out.append([
            r["slo_text"], _config_text(r), _fmt_usd(r["cost_usd_per_m_output_tokens"]),
            _fmt_usd(r["cost_usd_per_m_tokens"]), cache_text(r), _fmt_usd(r.get("revenue_usd_per_gpu_hour")),
            _fmt_usd(r.get("cost_usd_per_gpu_hour")),
            _fmt_pct(r.get("gross_margin")), _fmt_pct(r.get("break_even_utilization")),
            fmt_num(r["output_tok_s_per_gpu"]), fmt_num(r["interactivity_tok_s_user"]),
            fmt_num(r.get(r["ttft_column"])), fmt_num(r.get(r["tpot_column"])),
        ])
    return Table("Headline", cols, out)


def _config_text(r: dict[str, Any]) -> str:
    gpus = fmt_int(r.get("gpu_count"))
    seqs = f", max_num_seqs {fmt_int(r.get('max_num_seqs'))}" if finite_float(r.get("max_num_seqs")) else ""
    return (f"{r.get('model')} {quant_text(r)} on {gpus}x {r.get('gpu_type')}, {load_text(r)}{seqs} "
            f"[{r.get('run_id')}/{r.get('point_id')}]")


def cache_text(r: dict[str, Any]) -> str:
    """The cache share a point's money figures use, and where it came from ("77% measured"; a virtual-engine
    point's share came out of the scheduler simulation, so it says "simulated", never "measured")."""
    share = finite_float(r.get("cached_share"))
    if share is None:
        return "-"
    src = str(r.get("cached_share_source") or "")
    how = "measured" if src == "measured" else ("none" if src == "none" else "given")
    if how == "measured" and row_source(r.get("source"), r.get("engine")) == "virtual":
        how = "simulated"
    return f"{share:.0%} {how}" if how != "none" else "0% (none measured)"


def headline_sentences(rows: list[dict[str, Any]], utilization: float, fx: Any = None) -> list[str]:
    """One plain sentence per SLO, for readers who skip tables: every money figure at U and the point's
    cache share (all from the point's one Offer), the exchange rate when the price is in CNY."""
    out = []
    for r in rows:
        if r["point_id"] is None:
            out.append(f"{r['slo_text']}: no measured configuration meets this target.")
            continue
        s = (f"{r['slo_text']}: cheapest is {r.get('model')} {quant_text(r)} at {load_text(r)} - at U={utilization:g} "
             f"and cache share {cache_text(r)}: {_fmt_usd(r['cost_usd_per_m_output_tokens'])} per M output tokens "
             f"({_fmt_usd(r['cost_usd_per_m_tokens'])} per M input+output)")
        gm = finite_float(r.get("gross_margin"))
        if gm is not None:
            be = finite_float(r.get("break_even_utilization"))
            be_txt = ("it loses money at any utilization" if be is not None and be > 1
                      else f"break-even at {_fmt_pct(be)} utilization")
            s += f", gross margin {_fmt_pct(gm)} at {r.get('price_key')}; {be_txt} (same cache share)"
            if fx is not None:
                s += f"; CNY at {fx.usd_per_cny:g} USD/CNY"
        out.append(s + ".")
    return out



def price_text(entry: Any) -> str:
    parts = []
    for t in entry.all_tiers():
        cached = f", cached input {t.cached_input_per_m:g}" if t.cached_input_per_m is not None else ""
        lim = [f"input <= {t.max_input_tokens}" if t.max_input_tokens else "",
               f"output <= {t.max_output_tokens}" if t.max_output_tokens else ""]
        upto = f" ({' and '.join(x for x in lim if x)} tokens)" if any(lim) else ""
        parts.append(f"input {t.input_per_m:g}{cached}, output {t.output_per_m:g} {entry.currency}/M tokens{upto}")
    return "; ".join(parts)


def provenance(run: Any, points: pd.DataFrame) -> dict[str, Any]:
    """The facts block of one run (`run` is a bench.report.data.RunInfo; typed Any to keep tables below data)."""
    pts = points[points["run_id"] == run.run_id]
    env = run.env
    status = pts["status"].fillna("failed").value_counts().to_dict() if "status" in pts else {}
    facts = [
        ("run id", run.run_id),
        ("sweep", " - ".join(str(x) for x in (run.sweep.get("name"), run.sweep.get("description")) if x) or "-"),
        ("points", ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "0"),
        ("device", env.get("device") or ", ".join(sorted(set(pts.get("device", pd.Series()).dropna().astype(str))))),
        ("GPU", f"{env.get('gpu_count')} x {env.get('gpu_name')}" if env.get("gpu_name") else "none"),
        ("CPU", (env.get("cpu_model") or "-") + (f" ({env['cpu_count']} logical cores)" if env.get("cpu_count")
                                                  else "")),
        ("hardware entry", ", ".join(sorted({f"{r.get('gpu_type')} / {r.get('hardware_tier')}"
                                             for r in pts.to_dict("records")})) or "-"),
        ("$/GPU-hour", ", ".join(sorted({_fmt_usd(v) for v in pts.get("usd_per_gpu_hour", [])})) or "-"),
        ("maas-bench", env.get("maas_bench")),
        ("engine", env.get("vllm") or "-"),
        ("torch / transformers", f"{env.get('torch') or '-'} / {env.get('transformers') or '-'}"),
        ("python / platform", f"{env.get('python') or '-'} / {env.get('platform') or '-'}"),
        ("git", env.get("git_sha") or "-"),
    ]
    return {"run_id": run.run_id, "dir": str(run.run_dir), "facts": [(k, str(v)) for k, v in facts],
            "sweep_yaml": run.sweep_yaml.strip() or "(no sweep.yaml)"}


def method_lines(utilization: float) -> list[str]:
    return [
        f"Every money figure is at fleet utilization U = {utilization:g} (the default of `cost`, `margin` and "
        "`plan`: 0.8 at peak / peak-to-average 2; `--utilization` sets it) and comes from one "
        "bench.econ.margin.Offer per point, the same figures `maas-bench margin --results RUN --json` prints.",
        "$/M tokens = $/GPU-hour / (tok/s per GPU x 3600 x U / 1e6): the throughput was measured on a fully "
        "loaded server (U = 1); a fleet busy U of the time pays 1/U as much per token.",
        f"Gross margin = 1 - cost / revenue of the same requests at U = {utilization:g}: each point at its own "
        "measured input/output tokens and its MEASURED cache-hit share (cached input billed at the cached price; "
        "the cost uses the throughput measured at that share); each measured request priced at its own price "
        "tier (length-tiered prices); no cache writes billed unless stated. "
        "Break-even utilization = cost at U=1 / revenue, at the same cache share.",
        "An SLO is met when every limit holds at its percentile (p90 where the SLO names none); 'cheapest' = lowest "
        "$/M output tokens among the successful points that meet it.",
        "In the points table, [lo, hi] after a throughput or latency figure is its 95% confidence interval: batch "
        "means over the measured window for throughput, a bootstrap over requests for latency percentiles "
        "(docs/metrics.md); none below 10 measured requests.",
        "Interactivity (tok/s/user) = 1000 / median TPOT; the frontier in (a) and (b) holds the points no other "
        "point of the same series beats on both axes.",
    ]


