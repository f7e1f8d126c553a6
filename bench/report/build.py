"""The cost report: Markdown + one self-contained HTML file + PNG figures, from one or more runs.

Who reads it: the MaaS team forwards it to finance, so it answers "what does a million tokens cost
at each latency target, and what margin does that give at today's prices" and says plainly when a
number must not be read as a GPU number (a CPU run, failed points, unverified token counts).

What it does and does not do: it reads the results a run wrote (bench.sweep.store) and never recomputes a
metric; money comes from the columns the runner wrote (usd_per_m_output, usd_per_m_total) and from
bench.econ.margin (margin per point, break-even utilization, margin vs utilization). Figures:
  (a) output tok/s per GPU vs interactivity (tok/s/user), Pareto frontier per series (quantization);
  (b) $/M output tokens vs interactivity;
  (c) TTFT and TPOT percentiles vs concurrency (or request rate);
  (d) gross margin vs fleet utilization at a price-book entry, break-even marked;
  (e) the runs passed in side by side (e.g. BF16 vs INT8).

A tiny catalog twin (e.g. glm-4.5-tiny) has no price of its own: by default it is priced as the
real model it stands for (catalog `twin_of`), at the first provider of DEFAULT_PROVIDER_ORDER that
lists it, and the report says so.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.errors import UserInputError
from bench.measure.loadgen import COALESCED_WARN_FRAC
from bench.report.pareto import pareto_front
from bench.sweep.store import load_results

DEFAULT_PROVIDER_ORDER = ("zai", "minimax", "deepseek", "bigmodel", "aliyun")
SLO_PERCENTILES = ("p50", "p90", "p99")
DEFAULT_REPORTS_ROOT = Path("reports")
NUMERIC_CELL = re.compile(r"^-?\$?-?[\d.,]+(e[+-]?\d+)?%?$")

FIGURES = {
    "a": ("fig_a_throughput_vs_interactivity.png", "Output throughput per GPU vs interactivity"),
    "b": ("fig_b_cost_vs_interactivity.png", "$/M output tokens vs interactivity"),
    "c": ("fig_c_latency_vs_load.png", "TTFT and TPOT percentiles vs load"),
    "d": ("fig_d_margin_vs_utilization.png", "Gross margin vs fleet utilization"),
    "e": ("fig_e_run_comparison.png", "Runs compared"),
}

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
    ("usd_per_m_output", "$/M output", "usd"),
    ("usd_per_m_total", "$/M total", "usd"),
    ("gross_margin", "gross margin", "pct"),
    ("break_even_utilization", "break-even U", "pct"),
    ("j_per_output_token", "J/output tok", "num"),
)


# --- SLO targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SloTarget:
    """A latency target: TTFT and TPOT limits (None = no limit) at the report's percentile."""

    name: str
    ttft_ms: float | None
    tpot_ms: float | None

    def describe(self, percentile: str) -> str:
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT {percentile} <= {self.ttft_ms:g} ms")
        if self.tpot_ms is not None:
            parts.append(f"TPOT {percentile} <= {self.tpot_ms:g} ms")
        return f"{self.name}: " + (", ".join(parts) if parts else "no latency limit")


# Interactive chat wants ~30+ tok/s/user and a sub-second first token; "standard" is the smoke
# sweep's own SLO; "batch" is the cheapest way to make tokens when nobody is waiting.
DEFAULT_SLOS = (
    SloTarget("interactive", 500.0, 30.0),
    SloTarget("standard", 2000.0, 100.0),
    SloTarget("batch", None, None),
)


def parse_slo(text: str) -> SloTarget:
    """`TTFT_MS/TPOT_MS` or `NAME=TTFT_MS/TPOT_MS`, either number may be `-` (no limit): `2000/100`, `chat=500/-`."""
    name, _, spec = text.rpartition("=")
    parts = spec.split("/")
    if len(parts) != 2:
        raise UserInputError(
            f"--slo must be TTFT_MS/TPOT_MS or NAME=TTFT_MS/TPOT_MS, e.g. 2000/100 or chat=500/- (got {text!r})")
    limits: list[float | None] = []
    for what, p in zip(("TTFT_MS", "TPOT_MS"), parts, strict=True):
        p = p.strip()
        if p in ("-", ""):
            limits.append(None)
            continue
        try:
            v = float(p)
        except ValueError:
            raise UserInputError(f"--slo {text!r}: {what} must be a number > 0 or '-' (got {p!r})") from None
        if not math.isfinite(v) or v <= 0:
            raise UserInputError(f"--slo {text!r}: {what} must be a number > 0 or '-' (got {p!r})")
        limits.append(v)
    label = name.strip() or f"{parts[0].strip() or '-'}/{parts[1].strip() or '-'}"
    return SloTarget(label, limits[0], limits[1])


def _sweep_slos(points: pd.DataFrame) -> list[tuple[float | None, float | None]]:
    """The (TTFT, TPOT) limits the runs themselves were configured with (sweep `slo:`)."""
    if not {"slo_ttft_ms", "slo_tpot_ms"} <= set(points.columns):
        return []
    pairs = [(_num(t), _num(p)) for t, p in points[["slo_ttft_ms", "slo_tpot_ms"]].itertuples(index=False)]
    return list(dict.fromkeys(p for p in pairs if p != (None, None)))


def _slo_ladder(points: pd.DataFrame, extra: Sequence[SloTarget] | None) -> list[SloTarget]:
    """The given targets, else the default ladder plus each run's own SLO (named so when they coincide)."""
    if extra:
        return list(dict.fromkeys(extra))
    ladder = list(DEFAULT_SLOS)
    for t, p in _sweep_slos(points):
        same = [i for i, s in enumerate(ladder) if (s.ttft_ms, s.tpot_ms) == (t, p)]
        if same:
            ladder[same[0]] = SloTarget(f"{ladder[same[0]].name} (= sweep SLO)", t, p)
        else:
            ladder.insert(len(ladder) - 1, SloTarget("sweep SLO", t, p))
    return ladder


def _comparison_slo(points: pd.DataFrame, slos: Sequence[SloTarget]) -> SloTarget | None:
    """The SLO figure (e) compares runs under: the runs' own, else the first one with a limit."""
    own = _sweep_slos(points)
    for s in slos:
        if own and (s.ttft_ms, s.tpot_ms) == own[0]:
            return s
    return next((s for s in slos if s.ttft_ms is not None or s.tpot_ms is not None), None)


# --- inputs -----------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """One results directory: where it is, what produced it and how it was configured."""

    run_dir: Path
    run_id: str
    env: dict[str, Any]
    sweep_yaml: str
    sweep: dict[str, Any]
    points: int


def load_run(run_dir: str | Path) -> tuple[RunInfo, pd.DataFrame]:
    """A run's provenance and its points table; a missing or foreign directory is a user error."""
    d = Path(run_dir)
    try:
        df = load_results(d)
    except FileNotFoundError as e:
        raise UserInputError(f"run: {e}") from None
    if not d.is_dir():
        raise UserInputError(f"run: {d} must be a results/<run_id> directory")
    env_path, sweep_path = d / "env.json", d / "sweep.yaml"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    sweep_text = sweep_path.read_text() if sweep_path.is_file() else ""
    sweep = (yaml.safe_load(sweep_text) or {}) if sweep_text else {}
    df = df.copy()
    if "run_id" not in df.columns or df["run_id"].isna().any():
        df["run_id"] = d.name
    return RunInfo(d, d.name, env, sweep_text, sweep, len(df)), df


def _series_labels(df: pd.DataFrame) -> pd.Series:
    """Series = quantization, plus whatever else differs between points (model, GPU, dtype, KV dtype).

    Points within a series differ only in batching and load, so a frontier per series is the
    frontier "per quantization" of a sweep; the extra fields keep unlike configs apart.
    """
    def col(name: str) -> pd.Series:
        return df[name].astype(str) if name in df else pd.Series("", index=df.index)

    label = pd.Series([_quant_text({"quantization": q, "dtype": t})
                       for q, t in zip(col("quantization"), col("dtype"), strict=True)], index=df.index)
    if col("dtype").nunique() > 1:
        quantized = ~col("quantization").isin(["none", "None", "nan", ""])
        label = label.where(~quantized, label + " (" + col("dtype") + ")")
    if col("kv_cache_dtype").nunique() > 1:
        label = label + " kv " + col("kv_cache_dtype")
    for name in ("gpu_type", "model"):
        if col(name).nunique() > 1:
            label = col(name) + " " + label
    if df["run_id"].nunique() > 1:
        runs_per_label = df.groupby(label)["run_id"].nunique()
        if (runs_per_label > 1).any():
            label = label + " (" + df["run_id"].astype(str) + ")"
    return label


def _load_column(df: pd.DataFrame) -> tuple[pd.Series, str]:
    """x for load plots: concurrency where the point was closed-loop, else the request rate."""
    conc = pd.to_numeric(df.get("concurrency"), errors="coerce") if "concurrency" in df else None
    rate = pd.to_numeric(df.get("request_rate"), errors="coerce") if "request_rate" in df else None
    if conc is not None and conc.notna().all():
        return conc, "concurrency (closed loop)"
    if rate is not None and (conc is None or conc.isna().all()):
        return rate, "request rate (req/s)"
    both = conc.fillna(rate) if conc is not None and rate is not None else (conc if conc is not None else rate)
    return both, "concurrency or request rate"


# --- prices and margin ------------------------------------------------------------------------


@dataclass
class PriceChoice:
    """The price-book entry a model's points are priced at, and why that one."""

    model: str
    key: str | None
    entry: Any = None
    note: str = ""


def default_price_key(model: str, book: Any | None = None) -> tuple[str | None, str]:
    """A price-book key for `model`: itself, else the real model its tiny twin stands for.

    Returns (key or None, a sentence for the report saying what was chosen and why).
    """
    from bench.config.catalog import load_models
    from bench.config.prices import load_price_book

    book = book if book is not None else load_price_book()
    models = load_models()
    priced_as = model
    twin = models[model].twin_of if model in models else None
    if model not in book.models() and twin:
        priced_as = twin
    providers = book.providers(priced_as)
    if not providers:
        return None, (f"no price-book entry for {model!r}" + (f" or its twin {twin!r}" if twin else "")
                      + "; pass --price <model>@<provider> for margins")
    ordered = [p for p in DEFAULT_PROVIDER_ORDER if p in providers] + [p for p in providers
                                                                        if p not in DEFAULT_PROVIDER_ORDER]
    key = f"{priced_as}@{ordered[0]}"
    if priced_as != model:
        note = (f"{model} is the tiny twin of {priced_as} (same architecture family, dummy weights): its "
                f"margins use {priced_as}'s list price {key} (default; choose another with --price). They "
                f"describe {model} on this hardware, not {priced_as}.")
    else:
        note = f"{model} is priced at {key} (default; choose another with --price)."
    return key, note


def resolve_prices(models: Sequence[str], price: str | None = None, book: Any | None = None) -> dict[str, PriceChoice]:
    """One PriceChoice per model: the `--price` entry for all of them, else each model's default."""
    from bench.config.prices import load_price_book

    book = book if book is not None else load_price_book()
    out: dict[str, PriceChoice] = {}
    for m in models:
        if price is not None:
            out[m] = PriceChoice(m, price, book.get(price), f"{m} is priced at {price} (--price).")
            continue
        key, note = default_price_key(m, book)
        out[m] = PriceChoice(m, key, book.get(key) if key else None, note)
    return out


def margin_columns(
    points: pd.DataFrame, prices: dict[str, PriceChoice], utilization: float, usd_per_cny: float | None
) -> pd.DataFrame:
    """gross_margin and break_even_utilization per (run_id, point_id), from bench.econ.margin.

    Each point is priced at its own measured mix (bench.econ.margin.margin_per_point) and GPU rate.
    """
    from bench.econ import margin as mg

    cols = ["run_id", "point_id", "gross_margin", "break_even_utilization", "price_key"]
    rows: list[dict[str, Any]] = []
    for (run_id, model), grp in points.groupby(["run_id", "model"], dropna=False, sort=False):
        choice = prices.get(model)
        if choice is None or choice.entry is None:
            continue
        for r in mg.margin_per_point(grp, choice.entry, utilization, usd_per_cny=usd_per_cny):
            mix = mg.TrafficMix(r["input_tokens_per_request"], r["output_tokens_per_request"])
            be = mg.break_even_utilization(mix, choice.entry, r["output_tok_s_per_gpu"], r["usd_per_gpu_hour"],
                                           usd_per_cny=usd_per_cny)
            rows.append({"run_id": run_id, "point_id": r["point_id"], "gross_margin": r["gross_margin"],
                         "break_even_utilization": be, "price_key": choice.key})
    return pd.DataFrame(rows, columns=cols)


def margin_curve(
    row: dict[str, Any], choice: PriceChoice, usd_per_cny: float | None
) -> tuple[list[dict[str, float]], float]:
    """Margin-vs-utilization rows and the break-even utilization of one point (bench.econ.margin)."""
    from bench.econ import margin as mg

    done = row["completed"]
    mix = mg.TrafficMix(row["input_tokens"] / done, row["output_tokens"] / done)
    tok, rate = float(row["output_tok_s_per_gpu"]), float(row["usd_per_gpu_hour"])
    be = mg.break_even_utilization(mix, choice.entry, tok, rate, usd_per_cny=usd_per_cny)
    grid = {round(0.01 * i, 2) for i in range(1, 101)}
    if 0 < be < 1:  # resolve the curve around break-even even when it sits below 1%
        grid |= {u for u in (be / 2, be, min(1.0, be * 2)) if u > 0}
    curve = mg.margin_vs_utilization(mix, choice.entry, tok, rate, sorted(grid), usd_per_cny=usd_per_cny)
    return curve, be


# --- headline ---------------------------------------------------------------------------------


def headline(points: pd.DataFrame, slos: Sequence[SloTarget], percentile: str = "p90") -> list[dict[str, Any]]:
    """Per SLO: the cheapest ok point ($/M output tokens) meeting it, with its cost and margin.

    `points` must carry the margin columns (see margin_columns); a target nobody meets gets a row
    with `point_id` None and the best latency seen, so the report can say how far off it was.
    """
    from bench.econ.margin import meets_slo

    if percentile not in SLO_PERCENTILES:
        raise UserInputError(f"slo percentile must be one of {', '.join(SLO_PERCENTILES)} (got {percentile!r})")
    ok = points[(points["status"] == "ok") & pd.to_numeric(points["usd_per_m_output"], errors="coerce").gt(0)]
    recs = ok.to_dict("records")
    out = []
    for slo in slos:
        feasible = [r for r in recs if meets_slo(r, slo.ttft_ms, slo.tpot_ms, percentile)]
        row: dict[str, Any] = {"slo": slo.name, "slo_text": slo.describe(percentile), "ttft_limit_ms": slo.ttft_ms,
                               "tpot_limit_ms": slo.tpot_ms, "percentile": percentile, "point_id": None}
        if feasible:
            best = min(feasible, key=lambda r: r["usd_per_m_output"])
            row.update({k: best.get(k) for k in (
                "run_id", "point_id", "series", "model", "quantization", "gpu_type", "gpu_count", "concurrency",
                "request_rate", "max_num_seqs", "dtype", "output_tok_s_per_gpu", "interactivity_tok_s_user",
                "usd_per_m_output", "usd_per_m_total", "gross_margin", "break_even_utilization", "price_key",
                f"ttft_ms_{percentile}", f"tpot_ms_{percentile}")})
        else:
            row["best_ttft_ms"] = _min_num(ok, f"ttft_ms_{percentile}")
            row["best_tpot_ms"] = _min_num(ok, f"tpot_ms_{percentile}")
        out.append(row)
    return out


def _min_num(df: pd.DataFrame, col: str) -> float | None:
    if col not in df:
        return None
    v = pd.to_numeric(df[col], errors="coerce").min()
    return None if pd.isna(v) else float(v)


# --- warnings ---------------------------------------------------------------------------------


def collect_warnings(points: pd.DataFrame, runs: Sequence[RunInfo], prices: dict[str, PriceChoice]) -> list[str]:
    """Everything a reader must know before quoting a number from this report."""
    w: list[str] = []
    for run in runs:
        pts = points[points["run_id"] == run.run_id]
        devices = set(pts["device"].dropna().astype(str)) if "device" in pts else set()
        if "cpu" in devices or run.env.get("device") == "cpu":
            gpu = ", ".join(sorted(set(pts["gpu_type"].dropna().astype(str)))) if "gpu_type" in pts else "?"
            w.append(f"Run {run.run_id} ran on CPU ({run.env.get('cpu_model') or 'unknown CPU'}; hardware "
                     f"entry {gpu}). Its absolute throughput, latency and $/M tokens are CPU numbers and say "
                     "nothing about GPU serving; read them as a pipeline check and for relative trends only.")
        energy_cols = [c for c in ("energy_j", "j_per_output_token") if c in pts]
        if not energy_cols or pts[energy_cols].isna().all().all():
            w.append(f"Run {run.run_id}: energy not measured (no NVML energy data); J/token and energy cost "
                     "are not reported.")
    for r in points.to_dict("records"):
        where = f"{r.get('run_id')}/{r.get('point_id')} ({_load_text(r)})"
        if r.get("status") != "ok":
            w.append(f"Point {where} {r.get('status') or 'failed'}: {r.get('error') or 'no reason recorded'}")
        mism = _num(r.get("token_count_mismatches"))
        if mism:
            pct = _num(r.get("token_discrepancy_pct"))
            w.append(f"Point {where}: {int(mism)} request(s) where the server's usage.completion_tokens and the "
                     f"client tokenizer count differ" + (f" (discrepancy {pct:.2f}%)." if pct is not None else "."))
        missing = _num(r.get("usage_missing"))
        if missing:
            w.append(f"Point {where}: the server sent no usage for {int(missing)} request(s); their output "
                     "tokens are client tokenizer counts.")
        if r.get("client_kept_up") is False:
            reason = r.get("client_lag_reason") or f"max send lag {_fmt_num(r.get('max_send_lag_ms'))} ms"
            w.append(f"Point {where}: the load generator fell behind its schedule ({reason}); the offered load "
                     "was lower than requested.")
        coalesced = _num(r.get("coalesced_chunk_frac"))
        if coalesced is not None and coalesced > COALESCED_WARN_FRAC:
            w.append(f"Point {where}: {100 * coalesced:.0f}% of content chunks arrived in the same network read "
                     "as an earlier one; those ITL samples are ~0 ms and reflect read batching (server bursts or "
                     "a busy client), not token timing. TPOT is unaffected.")
    for choice in prices.values():
        if choice.entry is None:
            w.append(f"No margin for {choice.model}: {choice.note}")
    return w


def _load_text(r: dict[str, Any]) -> str:
    c, q = _num(r.get("concurrency")), _num(r.get("request_rate"))
    if c is not None:
        return f"concurrency {int(c)}"
    if q is not None:
        return f"{q:g} req/s"
    return "-"


def _load_short(r: dict[str, Any]) -> str:
    c, q = _num(r.get("concurrency")), _num(r.get("request_rate"))
    return f"c={int(c)}" if c is not None else (f"{q:g}/s" if q is not None else "-")


def _quant_text(r: dict[str, Any]) -> str:
    """'fp8', or the dtype for an unquantized model ('bfloat16 (unquantized)')."""
    q = r.get("quantization")
    if q is None or str(q) in ("none", "None", "nan", ""):
        return f"{r.get('dtype') or 'unknown dtype'} (unquantized)"
    return str(q)


# --- formatting -------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, strings)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt_num(v: Any, digits: int = 4) -> str:
    f = _num(v)
    if f is None:
        return "-"
    if f != 0 and (abs(f) >= 1e6 or abs(f) < 1e-3):
        return f"{f:.3e}"
    if abs(f) >= 10 ** digits:
        return f"{f:,.0f}"
    return f"{f:.{digits}g}"


def _fmt_usd(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else ("-$" if f < 0 else "$") + _fmt_num(abs(f))


def _fmt_pct(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else f"{f:.1%}"


def _fmt_int(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else str(int(f))


FORMATTERS = {"num": _fmt_num, "usd": _fmt_usd, "pct": _fmt_pct, "int": _fmt_int,
              "str": lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)}


@dataclass
class Table:
    """A rendered table: the templates lay it out as Markdown or HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]


def _point_table(points: pd.DataFrame) -> Table:
    cols = [c for c in POINT_COLUMNS if c[0] in points.columns]
    rows = [[FORMATTERS[f](r.get(c)) for c, _, f in cols] for r in points.to_dict("records")]
    return Table("Points", [h for _, h, _ in cols], rows)


def _headline_table(rows: list[dict[str, Any]], percentile: str, utilization: float) -> Table:
    cols = ["SLO", "cheapest configuration", "$/M output", "$/M total", f"gross margin (U={utilization:g})",
            "break-even utilization", "out tok/s/GPU", "tok/s/user", f"TTFT {percentile} ms", f"TPOT {percentile} ms"]
    out = []
    for r in rows:
        if r["point_id"] is None:
            seen = (f"no configuration meets it (best seen: TTFT {_fmt_num(r.get('best_ttft_ms'))} ms, "
                    f"TPOT {_fmt_num(r.get('best_tpot_ms'))} ms)")
            out.append([r["slo_text"], seen] + ["-"] * (len(cols) - 2))
            continue
        out.append([
            r["slo_text"], _config_text(r), _fmt_usd(r["usd_per_m_output"]), _fmt_usd(r["usd_per_m_total"]),
            _fmt_pct(r.get("gross_margin")), _fmt_pct(r.get("break_even_utilization")),
            _fmt_num(r["output_tok_s_per_gpu"]), _fmt_num(r["interactivity_tok_s_user"]),
            _fmt_num(r.get(f"ttft_ms_{percentile}")), _fmt_num(r.get(f"tpot_ms_{percentile}")),
        ])
    return Table("Headline", cols, out)


def _config_text(r: dict[str, Any]) -> str:
    gpus = _fmt_int(r.get("gpu_count"))
    seqs = f", max_num_seqs {_fmt_int(r.get('max_num_seqs'))}" if _num(r.get("max_num_seqs")) else ""
    return (f"{r.get('model')} {_quant_text(r)} on {gpus}x {r.get('gpu_type')}, {_load_text(r)}{seqs} "
            f"[{r.get('run_id')}/{r.get('point_id')}]")


def _headline_sentences(rows: list[dict[str, Any]], utilization: float) -> list[str]:
    """One plain sentence per SLO, for readers who skip tables."""
    out = []
    for r in rows:
        if r["point_id"] is None:
            out.append(f"{r['slo_text']}: no measured configuration meets this target.")
            continue
        s = (f"{r['slo_text']}: cheapest is {r.get('model')} {_quant_text(r)} at {_load_text(r)} - "
             f"{_fmt_usd(r['usd_per_m_output'])} per M output tokens ({_fmt_usd(r['usd_per_m_total'])} per M "
             f"input+output)")
        gm = _num(r.get("gross_margin"))
        if gm is not None:
            be = _num(r.get("break_even_utilization"))
            be_txt = ("it loses money at any utilization" if be is not None and be > 1
                      else f"break-even at {_fmt_pct(be)} utilization")
            s += f", gross margin {_fmt_pct(gm)} at {r.get('price_key')} and U={utilization:g}; {be_txt}"
        out.append(s + ".")
    return out


# --- figures ----------------------------------------------------------------------------------


def _new_figure(ncols: int = 1, width: float = 7.5, height: float = 4.4) -> tuple[Any, Any]:
    """A pyplot-free matplotlib figure (no global state, no display backend needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _empty(ax: Any, msg: str) -> None:
    ax.text(0.5, 0.5, msg, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _ok_numeric(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    d = df[df["status"] == "ok"].copy()
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce") if c in d else float("nan")
    return d.dropna(subset=list(cols))


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def _frontier_plot(ax: Any, d: pd.DataFrame, y: str, maximize_y: bool, ylabel: str) -> None:
    x = "interactivity_tok_s_user"
    colors = _colors(sorted(d["series"].unique()))
    for label, g in d.groupby("series", sort=True):
        xs, ys = g[x].tolist(), g[y].tolist()
        c = colors[label]
        ax.scatter(xs, ys, color=c, alpha=0.45, s=28)
        front = pareto_front(xs, ys if maximize_y else [-v for v in ys])
        fx = sorted((xs[i], ys[i]) for i in front)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "-o", color=c, lw=1.8, ms=6, label=f"{label} (frontier)")
        for xi, yi, lab in zip(xs, ys, g["load_short"], strict=True):
            ax.annotate(lab, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#444")
    ax.set_xlabel("interactivity (tok/s/user = 1000 / median TPOT)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def fig_throughput(points: pd.DataFrame, path: Path) -> Path:
    """(a) output tok/s per GPU vs interactivity; Pareto frontier (both maximized) per series."""
    fig, (ax,) = _new_figure()
    d = _ok_numeric(points, ["interactivity_tok_s_user", "output_tok_s_per_gpu"])
    if d.empty:
        _empty(ax, "no successful point with a throughput and a TPOT")
    else:
        _frontier_plot(ax, d, "output_tok_s_per_gpu", True, "output tok/s per GPU")
    ax.set_title("(a) Throughput per GPU vs interactivity; labels = load", fontsize=10)
    return _save(fig, path)


def fig_cost(points: pd.DataFrame, path: Path) -> Path:
    """(b) $/M output tokens vs interactivity; frontier = cheapest at each interactivity."""
    fig, (ax,) = _new_figure()
    d = _ok_numeric(points, ["interactivity_tok_s_user", "usd_per_m_output"])
    if d.empty:
        _empty(ax, "no successful point with a cost and a TPOT")
    else:
        _frontier_plot(ax, d, "usd_per_m_output", False, "$ per million output tokens (U = 1)")
        if d["usd_per_m_output"].max() > 20 * d["usd_per_m_output"].min():
            ax.set_yscale("log")
    ax.set_title("(b) Cost per M output tokens vs interactivity (full utilization)", fontsize=10)
    return _save(fig, path)


def fig_latency(points: pd.DataFrame, path: Path, xlabel: str, slos: Sequence[SloTarget]) -> Path:
    """(c) TTFT (left) and TPOT (right) p50/p90/p99 vs load, per series; SLO limits dashed."""
    fig, axes = _new_figure(2, width=10.0)
    d = _ok_numeric(points, ["load_x"])
    styles = {"p50": "-", "p90": "--", "p99": ":"}
    for ax, metric, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "tpot_ms", "TPOT")):
        if d.empty:
            _empty(ax, "no successful point")
            continue
        colors = _colors(sorted(d["series"].unique()))
        for label, g in d.groupby("series", sort=True):
            g = g.sort_values("load_x")
            for p, ls in styles.items():
                col = f"{metric}_{p}"
                if col in g:
                    ax.plot(g["load_x"], pd.to_numeric(g[col], errors="coerce"), ls, marker="o", ms=4,
                            color=colors[label], label=f"{label} {p}")
        limits = sorted({v for s in slos for v in [getattr(s, metric)] if v is not None})
        for lim in limits:
            ax.axhline(lim, color="#b22", lw=0.8, ls="-.", alpha=0.6)
            ax.annotate(f"SLO {lim:g} ms", (0.01, lim), xycoords=("axes fraction", "data"), fontsize=7, color="#b22")
        if d["load_x"].max() > 8 * max(d["load_x"].min(), 1e-9):
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name} (ms)")
        ax.set_title(f"(c) {name} percentiles vs load", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def fig_margin(curves: list[dict[str, Any]], path: Path, note: str) -> Path:
    """(d) gross margin vs fleet utilization for the headline points; break-even marked."""
    from matplotlib.ticker import PercentFormatter

    fig, (ax,) = _new_figure()
    if not curves:
        _empty(ax, note or "no price-book entry: pass --price <model>@<provider>")
    else:
        colors = _colors([c["label"] for c in curves])
        for i, c in enumerate(curves):
            us = [r["utilization"] for r in c["rows"]]
            ms = [r["gross_margin"] for r in c["rows"]]
            ax.plot(us, ms, "-", lw=1.8, color=colors[c["label"]], label=c["label"])
            be = c["break_even_utilization"]
            if be <= 1:
                ax.axvline(be, color=colors[c["label"]], ls="--", lw=1)
                ax.annotate(f"break-even U={be:.1%}", (be, 0), textcoords="offset points", xytext=(4, 6 + 12 * i),
                            fontsize=8, color=colors[c["label"]])
            else:
                ax.annotate(f"break-even U={be:.3g} > 100%: loss at any utilization", (1, ms[-1]),
                            textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=8,
                            color=colors[c["label"]])
        ax.axhline(0, color="black", lw=0.8)
        lowest = min(r["gross_margin"] for c in curves for r in c["rows"])
        if lowest < -1:  # margins at tiny U run to -infinity; show the range that matters
            ax.set_ylim(-1.0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlim(0, 1.02)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("fleet utilization U (share of time the GPUs serve traffic)")
    cut = bool(curves) and min(r["gross_margin"] for c in curves for r in c["rows"]) < -1
    ax.set_ylabel("gross margin = 1 - cost / revenue" + (" (cut at -100%)" if cut else ""))
    ax.set_title("(d) Gross margin vs utilization at list price" + (f" ({note})" if curves and note else ""),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def fig_runs(points: pd.DataFrame, path: Path, slo: SloTarget | None, percentile: str) -> Path:
    """(e) per run and series: peak output tok/s per GPU and lowest $/M output (all points; under `slo`)."""
    from bench.econ.margin import meets_slo

    fig, axes = _new_figure(2, width=10.0)
    d = _ok_numeric(points, ["output_tok_s_per_gpu", "usd_per_m_output"])
    if d.empty:
        for ax in axes:
            _empty(ax, "no successful point")
        return _save(fig, path)
    groups = []
    for (run_id, series), g in d.groupby(["run_id", "series"], sort=True):
        recs = g.to_dict("records")
        under = [r["usd_per_m_output"] for r in recs if slo and meets_slo(r, slo.ttft_ms, slo.tpot_ms, percentile)]
        groups.append({"label": f"{series}\n{run_id}", "peak": g["output_tok_s_per_gpu"].max(),
                       "cheapest": g["usd_per_m_output"].min(), "cheapest_slo": min(under) if under else None})
    labels = [g["label"] for g in groups]
    pos = list(range(len(groups)))
    axes[0].bar(pos, [g["peak"] for g in groups], color="#4c72b0")
    axes[0].set_ylabel("peak output tok/s per GPU")
    w = 0.4
    axes[1].bar([p - w / 2 for p in pos], [g["cheapest"] for g in groups], w, color="#55a868", label="any latency")
    if slo is not None:
        vals = [g["cheapest_slo"] if g["cheapest_slo"] is not None else 0 for g in groups]
        axes[1].bar([p + w / 2 for p in pos], vals, w, color="#c44e52", label=f"under {slo.name} SLO")
        for p, g in zip(pos, groups, strict=True):
            if g["cheapest_slo"] is None:
                axes[1].annotate("none meets", (p + w / 2, 0), ha="center", va="bottom", fontsize=7, rotation=90)
    axes[1].set_ylabel("lowest $ per M output tokens")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlim(-0.5 - 0.5 * (len(pos) < 3), len(pos) - 0.5 + 0.5 * (len(pos) < 3))
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    title = "(e) Runs compared" + ("" if d["run_id"].nunique() > 1 else " (one run; pass several to compare)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "markdown": str(self.markdown_path), "html": str(self.html_path),
                "figures": {k: str(v) for k, v in self.figures.items()}, "runs": self.runs, "points": self.points,
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
    utilization: float = 1.0,
    slos: Sequence[SloTarget] | None = None,
    slo_percentile: str = "p90",
    usd_per_cny: float | None = None,
) -> ReportResult:
    """Write report.md, report.html (images embedded) and the figure PNGs into `out_dir`.

    `price` (`<model>@<provider>`) prices every model; by default each model gets its own (or its
    twin's) entry. `utilization` is the fleet utilization the headline margins are quoted at (1.0 =
    the fully loaded server the benchmark measured; the margin figure shows the rest).
    """
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ.cost import require_utilization

    if not run_dirs:
        raise UserInputError("report: give at least one results/<run_id> directory")
    require_utilization(utilization)
    if slo_percentile not in SLO_PERCENTILES:
        raise UserInputError(f"--slo-percentile must be one of {', '.join(SLO_PERCENTILES)} (got {slo_percentile!r})")
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
    fx = usd_per_cny if usd_per_cny is not None else load_hardware().exchange_rates.usd_per_cny
    book = load_price_book()
    models = [str(m) for m in points["model"].dropna().unique()]
    prices = resolve_prices(models, price, book)
    points["series"] = _series_labels(points)
    points["load_x"], load_label = _load_column(points)
    recs = points.to_dict("records")
    points["load_short"] = [_load_short(r) for r in recs]
    points["load"] = [_load_text(r) for r in recs]
    points["done"] = [f"{_fmt_int(r.get('completed'))}/{_fmt_int(r.get('num_requests'))}" for r in recs]
    points = points.merge(margin_columns(points, prices, utilization, fx), on=["run_id", "point_id"], how="left")
    slo_list = _slo_ladder(points, slos)
    head = headline(points, slo_list, slo_percentile)
    warnings = collect_warnings(points, runs, prices)

    out = Path(out_dir) if out_dir is not None else default_out_dir([r.run_id for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    figs["a"] = fig_throughput(points, out / FIGURES["a"][0])
    figs["b"] = fig_cost(points, out / FIGURES["b"][0])
    figs["c"] = fig_latency(points, out / FIGURES["c"][0], load_label, slo_list)
    curves, curve_note = _margin_curves(points, head, prices, fx)
    figs["d"] = fig_margin(curves, out / FIGURES["d"][0], curve_note)
    figs["e"] = fig_runs(points, out / FIGURES["e"][0], _comparison_slo(points, slo_list), slo_percentile)

    price_notes = [c.note for c in prices.values() if c.entry is not None]
    for c in prices.values():
        if c.entry is not None:
            price_notes.append(f"{c.key}: {_price_text(c.entry)} (as of {c.entry.as_of}; {c.entry.source}).")
    ctx = {
        "title": "Cost report: " + ", ".join(r.run_id for r in runs),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": [_provenance(r, points) for r in runs],
        "headline_table": _headline_table(head, slo_percentile, utilization),
        "headline_sentences": _headline_sentences(head, utilization),
        "headline_caveats": _headline_caveats(points, runs),
        "price_notes": price_notes,
        "utilization": utilization,
        "percentile": slo_percentile,
        "warnings": warnings,
        "point_table": _point_table(points),
        "figures": [{"key": k, "file": FIGURES[k][0], "caption": FIGURES[k][1], "path": figs[k]} for k in FIGURES],
        "method": _method_lines(utilization, slo_percentile),
    }
    md_path = out / "report.md"
    html_path = out / "report.html"
    _write(md_path, _render("report.md.j2", ctx, autoescape=False))
    for f in ctx["figures"]:
        f["data_uri"] = "data:image/png;base64," + base64.b64encode(f["path"].read_bytes()).decode()
    _write(html_path, _render("report.html.j2", ctx, autoescape=True))
    return ReportResult(out, md_path, html_path, figs, head, warnings, price_notes, len(points),
                        [r.run_id for r in runs])


def _headline_caveats(points: pd.DataFrame, runs: Sequence[RunInfo]) -> list[str]:
    """The two facts that change how a headline number may be quoted: CPU hardware, tiny twins."""
    out = []
    cpu = [r.run_id for r in runs if r.env.get("device") == "cpu"
           or "cpu" in set(points.loc[points["run_id"] == r.run_id, "device"].dropna().astype(str) if "device" in points
                           else [])]
    if cpu:
        out.append(f"CPU run ({', '.join(cpu)}): these are CPU numbers, not GPU numbers - they check the pipeline "
                   "and show trends; do not quote them as the cost of serving on GPUs.")
    from bench.config.catalog import load_models

    models = load_models()
    twins = sorted({m for m in points["model"].dropna().astype(str) if m in models and models[m].twin_of})
    if twins:
        out.append("Tiny twin model(s) " + ", ".join(f"{m} (of {models[m].twin_of})" for m in twins)
                   + ": same architecture family, far fewer parameters, dummy weights; throughput and cost say "
                   "nothing about the full model.")
    return out


def _margin_curves(points: pd.DataFrame, head: list[dict[str, Any]], prices: dict[str, PriceChoice],
                   fx: float | None) -> tuple[list[dict[str, Any]], str]:
    """Margin-vs-utilization curves for the distinct headline points (one per SLO they win)."""
    curves: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    keys = set()
    for h in head:
        if h["point_id"] is None:
            continue
        k = (h["run_id"], h["point_id"])
        if k in seen:
            seen[k]["label"] += f", {h['slo']}"
            continue
        row = points[(points["run_id"] == h["run_id"]) & (points["point_id"] == h["point_id"])].iloc[0].to_dict()
        choice = prices.get(row.get("model"))
        if choice is None or choice.entry is None or not _num(row.get("completed")):
            continue
        rows, be = margin_curve(row, choice, fx)
        c = {"label": f"{_load_text(row)} {_quant_text(row)} - {h['slo']}", "rows": rows,
             "break_even_utilization": be}
        seen[k] = c
        curves.append(c)
        keys.add(choice.key)
    note = ", ".join(sorted(k for k in keys if k)) if curves else "no priced point: pass --price <model>@<provider>"
    return curves, note


def _price_text(entry: Any) -> str:
    parts = []
    for t in entry.all_tiers():
        cached = f", cached input {t.cached_input_per_m:g}" if t.cached_input_per_m is not None else ""
        upto = f" (input <= {t.max_input_tokens} tokens)" if t.max_input_tokens else ""
        parts.append(f"input {t.input_per_m:g}{cached}, output {t.output_per_m:g} {entry.currency}/M tokens{upto}")
    return "; ".join(parts)


def _provenance(run: RunInfo, points: pd.DataFrame) -> dict[str, Any]:
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


def _method_lines(utilization: float, percentile: str) -> list[str]:
    return [
        "$/M tokens = $/GPU-hour / (tok/s per GPU x 3600 / 1e6), measured on a fully loaded server (U = 1); "
        "at fleet utilization U the cost scales by 1/U.",
        f"Gross margin = 1 - cost / revenue of the same requests, each point at its own measured input/output "
        f"tokens per request, at U = {utilization:g} (bench.econ.margin). Break-even utilization = cost at U=1 / revenue.",
        f"An SLO is met when the point's TTFT and TPOT at {percentile} are within the limits; 'cheapest' = lowest "
        "$/M output tokens among the successful points that meet it.",
        "Interactivity (tok/s/user) = 1000 / median TPOT; the frontier in (a) and (b) holds the points no other "
        "point of the same series beats on both axes.",
    ]


def _render(template: str, ctx: dict[str, Any], autoescape: bool) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=autoescape, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md_cell
    env.tests["numeric"] = _is_numeric_cell
    return env.get_template(template).render(**ctx)


def _is_numeric_cell(v: Any) -> bool:
    """Right-align numbers, money and percentages in HTML tables; text stays left."""
    return bool(NUMERIC_CELL.match(str(v)))


def _md_cell(v: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def _write(path: Path, text: str) -> None:
    from bench.sweep.store import atomic_write_text

    atomic_write_text(path, text)
