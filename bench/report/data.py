"""Report data: load the runs, label series and loads, choose prices, add the economics columns
(bench.econ.margin), pick the cheapest point per SLO tier (bench.config.slo) and collect warnings."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config.base import read_yaml
from bench.config.slo import DEFAULT_PERCENTILE, Slo, parse_slo
from bench.errors import UserInputError
from bench.measure.loadgen import COALESCED_WARN_FRAC
from bench.report.tables import finite_float, fmt_num, load_text, quant_text, spec_text
from bench.sweep.store import load_results

DEFAULT_PROVIDER_ORDER = ("zai", "minimax", "deepseek", "bigmodel", "aliyun")


# --- SLO targets ------------------------------------------------------------------------------


# Interactive chat wants ~30+ tok/s/user and a sub-second first token; "standard" is the smoke
# sweep's own SLO; "batch" is the cheapest way to make tokens when nobody is waiting. Written in the one
# syntax of bench.config.slo (no `_pNN` = p90).
DEFAULT_SLOS = (
    parse_slo("interactive:ttft_ms<=500,tpot_ms<=30"),
    parse_slo("standard:ttft_ms<=2000,tpot_ms<=100"),
    Slo(name="batch"),
)


def _sweep_slos(points: pd.DataFrame) -> list[tuple[float | None, float | None]]:
    """The (TTFT, TPOT) limits the runs themselves were configured with (sweep `slo:`, read at p90)."""
    if not {"slo_ttft_ms", "slo_tpot_ms"} <= set(points.columns):
        return []
    cols = points[["slo_ttft_ms", "slo_tpot_ms"]]
    pairs = [(finite_float(t), finite_float(p)) for t, p in cols.itertuples(index=False)]
    return list(dict.fromkeys(p for p in pairs if p != (None, None)))


def _limits(s: Slo) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) limits of an SLO whose terms are all at the default percentile, else a key nothing matches."""
    if any(t.percentile != DEFAULT_PERCENTILE or t.metric not in ("ttft_ms", "tpot_ms") for t in s.terms):
        return (math.nan, math.nan)
    return (s.ttft_ms, s.tpot_ms)


def _named(name: str, ttft_ms: float | None, tpot_ms: float | None) -> Slo:
    return Slo.model_validate({"ttft_ms": ttft_ms, "tpot_ms": tpot_ms}).model_copy(update={"name": name})


def slo_ladder(points: pd.DataFrame, extra: Sequence[Slo] | None) -> list[Slo]:
    """The given targets, else the default ladder plus each run's own SLO (named so when they coincide)."""
    if extra:
        return list(dict.fromkeys(extra))
    ladder = list(DEFAULT_SLOS)
    for t, p in _sweep_slos(points):
        same = [i for i, s in enumerate(ladder) if _limits(s) == (t, p)]
        if same:
            ladder[same[0]] = _named(f"{ladder[same[0]].name} (= sweep SLO)", t, p)
        else:
            ladder.insert(len(ladder) - 1, _named("sweep SLO", t, p))
    return ladder


def comparison_slo(points: pd.DataFrame, slos: Sequence[Slo]) -> Slo | None:
    """The SLO figure (e) compares runs under: the runs' own, else the first one with a limit."""
    own = _sweep_slos(points)
    for s in slos:
        if own and _limits(s) == own[0]:
            return s
    return next((s for s in slos if s), None)


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
    if not d.is_dir():  # checked first: a file (a points.parquet, a sweep.yaml) is not a run
        what = "is a file" if d.is_file() else "no such results directory"
        raise UserInputError(f"run: {d} must be a results/<run_id> directory ({what})")
    df = load_results(d)
    env_path, sweep_path = d / "env.json", d / "sweep.yaml"
    env = _read_env(env_path) if env_path.is_file() else {}
    sweep = (read_yaml(sweep_path) or {}) if sweep_path.is_file() else {}  # bounded, one line when corrupt
    if not isinstance(sweep, dict):
        raise UserInputError(f"{sweep_path}: corrupt run file: not a mapping (a sweep config)")
    sweep_text = sweep_path.read_text(encoding="utf-8") if sweep_path.is_file() else ""
    df = df.copy()
    if "run_id" not in df.columns or df["run_id"].isna().any():
        df["run_id"] = d.name
    return RunInfo(d, d.name, env, sweep_text, sweep, len(df)), df


def _read_env(path: Path) -> dict[str, Any]:
    """A run's env.json; a torn or hand-edited one is one line naming it (UserInputError)."""
    try:
        env = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UserInputError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: corrupt run file: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path}: corrupt run file: invalid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise UserInputError(f"{path}: corrupt run file: JSON nested too deep") from None
    if not isinstance(env, dict):
        raise UserInputError(f"{path}: corrupt run file: not a JSON object")
    return env


def series_labels(df: pd.DataFrame) -> pd.Series:
    """Series = quantization, plus whatever else differs between points (model, GPU, dtype, KV dtype).

    Points within a series differ only in batching and load, so a frontier per series is the
    frontier "per quantization" of a sweep; the extra fields keep unlike configs apart.
    """
    def col(name: str) -> pd.Series:
        return df[name].astype(str) if name in df else pd.Series("", index=df.index)

    label = pd.Series([quant_text({"quantization": q, "dtype": t})
                       for q, t in zip(col("quantization"), col("dtype"), strict=True)], index=df.index)
    if col("dtype").nunique() > 1:
        quantized = ~col("quantization").isin(["none", "None", "nan", ""])
        label = label.where(~quantized, label + " (" + col("dtype") + ")")
    if col("kv_cache_dtype").nunique() > 1:
        label = label + " kv " + col("kv_cache_dtype")
    if "spec_num_speculative_tokens" in df and col("spec_num_speculative_tokens").nunique() > 1:
        label = label + " " + pd.Series([spec_text(r) for r in df.to_dict("records")], index=df.index)
    for name in ("gpu_type", "model"):
        if col(name).nunique() > 1:
            label = col(name) + " " + label
    if df["run_id"].nunique() > 1:
        runs_per_label = df.groupby(label)["run_id"].nunique()
        if (runs_per_label > 1).any():
            label = label + " (" + df["run_id"].astype(str) + ")"
    return label


def load_column(df: pd.DataFrame) -> tuple[pd.Series, str]:
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


# The money columns every surface of the report reads (tables, sentences, figures), all from one Offer per
# point (bench.econ.margin.point_offers / point_row: the same rows `margin --results` prints).
ECON_COLUMNS = ["gross_margin", "break_even_utilization", "price_key", "revenue_usd_per_gpu_hour",
                "cost_usd_per_gpu_hour", "cost_usd_per_m_output_tokens", "cost_usd_per_m_tokens",
                "revenue_usd_per_request", "revenue_usd_per_request_mean_request", "cost_usd_per_request",
                "cached_share", "cached_share_source", "cache_write_share", "utilization", "revenue_basis"]


def load_run_requests(run: RunInfo, point_ids: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The per-request tables of a run's points (point_id -> DataFrame); a point without one is priced on
    its mean request."""
    from bench.sweep.store import REQUESTS_DIR, load_requests

    out = {}
    for pid in point_ids:
        if (run.run_dir / REQUESTS_DIR / f"{pid}.parquet").is_file():
            try:
                out[str(pid)] = load_requests(run.run_dir, str(pid))
            except (OSError, ValueError):
                continue
    return out


def point_economics(
    points: pd.DataFrame, prices: dict[str, PriceChoice], utilization: float, usd_per_cny: float | None,
    requests: dict[str, dict[str, pd.DataFrame]] | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], Any]]:
    """The money columns (ECON_COLUMNS) per (run_id, point_id) and each point's Offer.

    One Offer per point (bench.econ.margin.point_offers): its measured mix and cache share, each measured
    request at its own price tier (`requests`: run_id -> point_id -> per-request table), its GPU rate, at
    `utilization`. A model without a price gets the cost columns only.
    """
    from bench.econ import margin as mg

    cols = ["run_id", "point_id", *ECON_COLUMNS]
    rows: list[dict[str, Any]] = []
    offers: dict[tuple[str, str], Any] = {}
    for (run_id, model), grp in points.groupby(["run_id", "model"], dropna=False, sort=False):
        choice = prices.get(model)
        entry = choice.entry if choice is not None else None
        for po in mg.point_offers(grp, entry, utilization, usd_per_cny=usd_per_cny,
                                  requests=(requests or {}).get(run_id)):
            r = mg.point_row(po)
            r.update({"run_id": run_id, "point_id": po.record.get("point_id"),
                      "price_key": choice.key if entry is not None else None})  # type: ignore[union-attr]
            rows.append({c: r.get(c) for c in cols})
            offers[(run_id, po.record.get("point_id"))] = po.offer
    return pd.DataFrame(rows, columns=cols), offers


def margin_curve(offer: Any) -> tuple[list[dict[str, float]], float]:
    """Margin-vs-utilization rows and the break-even utilization of one point's Offer (its cache share and
    per-request tiers included: the same figures as its table row)."""
    from bench.econ import margin as mg

    be = mg.api_margin(offer).break_even_utilization
    grid = {round(0.01 * i, 2) for i in range(1, 101)}
    if 0 < be < 1:  # resolve the curve around break-even even when it sits below 1%
        grid |= {u for u in (be / 2, be, min(1.0, be * 2)) if u > 0}
    curve = mg.margin_vs_utilization(offer, sorted(grid))
    return curve, be


# --- headline ---------------------------------------------------------------------------------


def headline(points: pd.DataFrame, slos: Sequence[Slo]) -> list[dict[str, Any]]:
    """Per SLO: the cheapest ok point ($/M output tokens at the report's U) meeting it, with its cost and margin.

    `points` must carry the money columns (see point_economics); a target nobody meets gets a row
    with `point_id` None and the best latency seen (at the SLO's own percentiles), so the report can
    say how far off it was.
    """
    ok = points[(points["status"] == "ok")
                & pd.to_numeric(points["cost_usd_per_m_output_tokens"], errors="coerce").gt(0)]
    recs = ok.to_dict("records")
    out = []
    for slo in slos:
        ttft_col, tpot_col = f"ttft_ms_{slo.percentile_of('ttft_ms')}", f"tpot_ms_{slo.percentile_of('tpot_ms')}"
        feasible = [r for r in recs if slo.met_by(r)]
        row: dict[str, Any] = {"slo": slo.label, "slo_text": slo.describe() if slo.name else
                               f"{slo.label}: {slo.describe()}", "slo_spec": str(slo),
                               "ttft_limit_ms": slo.ttft_ms, "tpot_limit_ms": slo.tpot_ms,
                               "ttft_column": ttft_col, "tpot_column": tpot_col, "point_id": None}
        if feasible:
            best = min(feasible, key=lambda r: r["cost_usd_per_m_output_tokens"])
            cols = ("run_id", "point_id", "series", "source", "engine", "model", "quantization", "gpu_type",
                    "gpu_count", "concurrency", "request_rate", "max_num_seqs", "dtype", "output_tok_s_per_gpu",
                    "interactivity_tok_s_user",
                    *ECON_COLUMNS, ttft_col, tpot_col,
                    *(t.column for t in slo.terms),
                    # 95% intervals (measure.intervals; null where none, e.g. p95 or under 10 requests)
                    *(f"{c}_ci_{e}" for c in ("output_tok_s", ttft_col, tpot_col) for e in ("lo", "hi")))
            row.update({k: best.get(k) for k in cols})
        else:
            row["best_ttft_ms"] = _min_num(ok, ttft_col)
            row["best_tpot_ms"] = _min_num(ok, tpot_col)
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
        if _simulated(pts):  # no hardware ran it: the estimate banner says so (headline_caveats)
            continue
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
        where = f"{r.get('run_id')}/{r.get('point_id')} ({load_text(r)})"
        if r.get("status") != "ok":
            w.append(f"Point {where} {r.get('status') or 'failed'}: {r.get('error') or 'no reason recorded'}")
        mism = finite_float(r.get("token_count_mismatches"))
        if mism:
            pct = finite_float(r.get("token_discrepancy_pct"))
            w.append(f"Point {where}: {int(mism)} request(s) where the server's usage.completion_tokens and the "
                     f"client tokenizer count differ" + (f" (discrepancy {pct:.2f}%)." if pct is not None else "."))
        missing = finite_float(r.get("usage_missing"))
        if missing:
            w.append(f"Point {where}: the server sent no usage for {int(missing)} request(s); their output "
                     "tokens are client tokenizer counts.")
        if r.get("client_kept_up") is False:
            reason = r.get("client_lag_reason") or f"max send lag {fmt_num(r.get('max_send_lag_ms'))} ms"
            w.append(f"Point {where}: the load generator fell behind its schedule ({reason}); the offered load "
                     "was lower than requested.")
        coalesced = finite_float(r.get("coalesced_chunk_frac"))
        if coalesced is not None and coalesced > COALESCED_WARN_FRAC:
            w.append(f"Point {where}: {100 * coalesced:.0f}% of content chunks arrived in the same network read "
                     "as an earlier one; those ITL samples are ~0 ms and reflect read batching (server bursts or "
                     "a busy client), not token timing. TPOT is unaffected.")
    for choice in prices.values():
        if choice.entry is None:
            w.append(f"No margin for {choice.model}: {choice.note}")
    return w



def _simulated(pts: pd.DataFrame) -> bool:
    """Every point of these rows ran on the virtual engine (bench.planner.virtual): simulated, not measured."""
    return "engine" in pts and len(pts) > 0 and bool((pts["engine"].astype(str) == "virtual").all())


def headline_caveats(points: pd.DataFrame, runs: Sequence[RunInfo]) -> list[str]:
    """The facts that change how a headline number may be quoted: simulated (virtual engine), CPU hardware,
    tiny twins."""
    out = []
    virtual = sorted({str(r) for r in points.loc[points["engine"].astype(str) == "virtual", "run_id"]}) \
        if "engine" in points else []
    if virtual:
        out.append(f"ESTIMATE, NOT MEASURED ({', '.join(virtual)}): the virtual engine simulated vLLM's scheduler "
                   "over the planner's step model (bench/planner/scheduler.py); no GPU ran these points. Quote "
                   "them with the planner's error band (`maas-bench plan --check-published`), never as measurements.")
    cpu = [r.run_id for r in runs if not _simulated(points[points["run_id"] == r.run_id]) and (
           r.env.get("device") == "cpu"
           or "cpu" in set(points.loc[points["run_id"] == r.run_id, "device"].dropna().astype(str) if "device" in points
                           else []))]
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


def margin_curves(points: pd.DataFrame, head: list[dict[str, Any]], prices: dict[str, PriceChoice],
                  offers: dict[tuple[str, str], Any]) -> tuple[list[dict[str, Any]], str]:
    """Margin-vs-utilization curves for the distinct headline points (one per SLO they win), each from the
    point's own Offer (see point_economics)."""
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
        offer = offers.get(k)
        if choice is None or choice.entry is None or offer is None:
            continue
        rows, be = margin_curve(offer)
        c = {"label": f"{load_text(row)} {quant_text(row)} - {h['slo']} (cache share {offer.mix.cached_share:.0%})",
             "rows": rows, "break_even_utilization": be}
        seen[k] = c
        curves.append(c)
        keys.add(choice.key)
    note = ", ".join(sorted(k for k in keys if k)) if curves else "no priced point: pass --price <model>@<provider>"
    return curves, note
