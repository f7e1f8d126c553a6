"""The report figures (a)-(e) as PNG files (matplotlib, no display needed). They plot columns the run
wrote and bench.report.data added; nothing is recomputed here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from bench.config.slo import Slo
from bench.report.pareto import pareto_front
from bench.report.tables import finite_float, spec_text

FIGURES = {
    "a": ("fig_a_throughput_vs_interactivity.png", "Output throughput per GPU vs interactivity"),
    "b": ("fig_b_cost_vs_interactivity.png", "$/M output tokens vs interactivity"),
    "c": ("fig_c_latency_vs_load.png", "TTFT and TPOT percentiles vs load"),
    "d": ("fig_d_margin_vs_utilization.png", "Gross margin vs fleet utilization"),
    "e": ("fig_e_run_comparison.png", "Runs compared"),
    "cache": ("fig_cache_margin_vs_hit_rate.png", "Gross margin vs measured prefix-cache hit rate"),
    "spec": ("fig_spec_throughput_vs_interactivity.png",
             "Output throughput per GPU vs interactivity, with and without speculative decoding"),
}


# --- figures ----------------------------------------------------------------------------------


F = TypeVar("F", bound=Callable[..., Path])


def _plain_text(fn: F) -> F:
    """Run a figure function with matplotlib's mathtext off: labels carry user text (model ids, run names,
    series), and a `$...$` in one was parsed as TeX (a model directory named `$\\frac$` crashed the report).
    Drawing happens in `_save` inside the call, so tick labels made at draw time are covered too."""
    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Path:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)
    return plain  # type: ignore[return-value]


def _new_figure(ncols: int = 1, width: float = 7.5, height: float = 4.4) -> tuple[Any, Any]:
    """A pyplot-free matplotlib figure (no global state, no display backend needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    """Render to memory, then write atomically: a full disk or a kill never leaves a torn or 0-byte PNG."""
    import io

    from bench.atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
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


def _frontier_figure(points: pd.DataFrame, path: Path, y: str, maximize: bool, ylabel: str, what: str,
                     title: str) -> Path:
    """One Pareto-frontier figure of `y` vs interactivity (fig_throughput and fig_cost differ only in
    the column, the frontier direction and the labels); a log y axis when `y` spans over 20x."""
    fig, (ax,) = _new_figure()
    d = _ok_numeric(points, ["interactivity_tok_s_user", y])
    if d.empty:
        _empty(ax, f"no successful point with {what} and a TPOT")
    else:
        _frontier_plot(ax, d, y, maximize, ylabel)
        if not maximize and d[y].max() > 20 * d[y].min():
            ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


@_plain_text
def fig_throughput(points: pd.DataFrame, path: Path) -> Path:
    """(a) output tok/s per GPU vs interactivity; Pareto frontier (both maximized) per series."""
    return _frontier_figure(points, path, "output_tok_s_per_gpu", True, "output tok/s per GPU", "a throughput",
                            "(a) Throughput per GPU vs interactivity; labels = load")


@_plain_text
def fig_cost(points: pd.DataFrame, path: Path, utilization: float) -> Path:
    """(b) $/M output tokens at the report's U vs interactivity; frontier = cheapest at each interactivity."""
    return _frontier_figure(points, path, "cost_usd_per_m_output_tokens", False,
                            f"$ per million output tokens (U = {utilization:g})",
                            "a cost", f"(b) Cost per M output tokens vs interactivity (U = {utilization:g})")


@_plain_text
def fig_latency(points: pd.DataFrame, path: Path, xlabel: str, slos: Sequence[Slo]) -> Path:
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
        limits = sorted({t.limit_ms for s in slos for t in s.terms if t.metric == metric})
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


@_plain_text
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
    ax.set_title("(d) Gross margin vs utilization at list price, at each point's cache share"
                 + (f" ({note})" if curves and note else ""),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def has_speculation(points: pd.DataFrame) -> bool:
    """True when some point of the runs speculated (K >= 1): the speculation figure is drawn only then."""
    k = pd.to_numeric(points.get("spec_num_speculative_tokens", pd.Series(dtype=float)), errors="coerce")
    return bool((k.fillna(0) > 0).any())


@_plain_text
def fig_spec(points: pd.DataFrame, path: Path) -> Path:
    """Output tok/s per GPU vs interactivity, one colour per speculation setting (no spec, method K, pinned
    L); each successful point is labelled with its measured acceptance length (mean tokens per step).

    Why its own figure: speculation trades verification compute for fewer steps per token, so it moves
    points along interactivity more than along throughput; (a) mixes that with quantization series.
    """
    fig, (ax,) = _new_figure()
    d = _ok_numeric(points, ["interactivity_tok_s_user", "output_tok_s_per_gpu"])
    if d.empty:
        _empty(ax, "no successful point with a throughput and a TPOT (failed speculative points are in the table)")
    else:
        d["spec"] = [spec_text(r) for r in d.to_dict("records")]
        colors = _colors(sorted(d["spec"].unique()))
        for label, g in d.groupby("spec", sort=True):
            g = g.sort_values("interactivity_tok_s_user")
            ax.plot(g["interactivity_tok_s_user"], g["output_tok_s_per_gpu"], "-o", color=colors[label], label=label)
            for r in g.to_dict("records"):
                acc = finite_float(r.get("spec_acceptance_length"))
                note = r.get("load_short", "") + (f", accept {acc:.2f}" if acc is not None else "")
                ax.annotate(note, (r["interactivity_tok_s_user"], r["output_tok_s_per_gpu"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color="#444")
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("interactivity (tok/s/user = 1000 / median TPOT)")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("Throughput per GPU vs interactivity, with and without speculation", fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


@_plain_text
def fig_cache_margin(points: pd.DataFrame, path: Path, utilization: float) -> Path:
    """Gross margin vs the measured prefix-cache hit rate (cached_input_frac) of each point.

    Each point is at its own hit rate on both sides: cached tokens billed at the cached price, cost
    at the throughput measured at that hit rate. A point without prefix caching sits at 0.
    """
    from matplotlib.ticker import PercentFormatter

    fig, (ax,) = _new_figure()
    d = points.copy()
    if "cached_input_frac" in d and "gross_margin" in d:
        hit = pd.to_numeric(d["cached_input_frac"], errors="coerce")
        d["hit"] = hit.fillna(0.0)  # no cached_tokens reported and caching off: nothing was cached
    d = _ok_numeric(d, ["hit", "gross_margin"]) if "hit" in d else d.iloc[0:0]
    if d.empty:
        _empty(ax, "no point with a margin and a measured cache-hit rate")
    else:
        colors = _colors(sorted(d["series"].astype(str).unique()))
        for label, g in d.groupby(d["series"].astype(str)):
            ax.plot(g["hit"], g["gross_margin"], "o", color=colors[label], label=label)
            for r in g.to_dict("records"):
                on = "cache on" if r.get("enable_prefix_caching") else "cache off"
                ax.annotate(f"{on}, {r.get('load_short', '')}", (r["hit"], r["gross_margin"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("measured prefix-cache hit rate (cached prompt tokens / prompt tokens)")
    ax.set_ylabel(f"gross margin at U={utilization:g}")
    ax.set_title("Gross margin vs cache-hit rate (cache counted on revenue and cost)", fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


@_plain_text
def fig_runs(points: pd.DataFrame, path: Path, slo: Slo | None, utilization: float) -> Path:
    """(e) per run and series: peak output tok/s per GPU and lowest $/M output (all points; under `slo`)."""
    fig, axes = _new_figure(2, width=10.0)
    d = _ok_numeric(points, ["output_tok_s_per_gpu", "cost_usd_per_m_output_tokens"])
    if d.empty:
        for ax in axes:
            _empty(ax, "no successful point")
        return _save(fig, path)
    groups = []
    for (run_id, series), g in d.groupby(["run_id", "series"], sort=True):
        recs = g.to_dict("records")
        under = [r["cost_usd_per_m_output_tokens"] for r in recs if slo and slo.met_by(r)]
        groups.append({"label": f"{series}\n{run_id}", "peak": g["output_tok_s_per_gpu"].max(),
                       "cheapest": g["cost_usd_per_m_output_tokens"].min(),
                       "cheapest_slo": min(under) if under else None})
    labels = [g["label"] for g in groups]
    pos = list(range(len(groups)))
    axes[0].bar(pos, [g["peak"] for g in groups], color="#4c72b0")
    axes[0].set_ylabel("peak output tok/s per GPU")
    w = 0.4
    axes[1].bar([p - w / 2 for p in pos], [g["cheapest"] for g in groups], w, color="#55a868", label="any latency")
    if slo is not None:
        vals = [g["cheapest_slo"] if g["cheapest_slo"] is not None else 0 for g in groups]
        axes[1].bar([p + w / 2 for p in pos], vals, w, color="#c44e52", label=f"under {slo.label} SLO")
        for p, g in zip(pos, groups, strict=True):
            if g["cheapest_slo"] is None:
                axes[1].annotate("none meets", (p + w / 2, 0), ha="center", va="bottom", fontsize=7, rotation=90)
    axes[1].set_ylabel(f"lowest $ per M output tokens (U = {utilization:g})")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlim(-0.5 - 0.5 * (len(pos) < 3), len(pos) - 0.5 + 0.5 * (len(pos) < 3))
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    title = "(e) Runs compared" + ("" if d["run_id"].nunique() > 1 else " (one run; pass several to compare)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


