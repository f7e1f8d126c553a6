"""Command-line interface: argument plumbing and terminal output only.

Every command that answers with a table also takes `--json`. Bad input (a `UserInputError`)
prints one line naming the field and exits 2; logic lives in the library modules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bench.errors import UserInputError

app = typer.Typer(
    name="maas-bench",
    help="Inference cost benchmarking for MaaS: measure vLLM, price tokens, compute gross margin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide; when output is piped (CI logs, `| less`) rich would otherwise wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (2 = bad input)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Machine output: plain JSON on stdout, no rich markup."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Render a list of dicts as a rich table; floats get 4 significant digits."""
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    cols = columns or list(rows[0].keys())
    table = Table(title=title, show_lines=False)
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    console.print(table)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    return str(v)


# --- commands ---------------------------------------------------------------------------------
# Each command module keeps its logic in bench/<module>.py; the functions below only plumb.


@app.command()
def models(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List catalog models: total/active parameters and KV-cache bytes per token."""
    from bench.config.catalog import load_models

    rows = [m.summary() for m in load_models().values()]
    if json_out:
        print_json(rows)
    else:
        print_table("Model catalog", rows)


SUMMARY_COLUMNS = ["status", "model", "dtype", "quantization", "concurrency", "request_rate", "completed",
                   "output_tok_s", "ttft_ms_p50", "tpot_ms_p50", "e2el_ms_p99", "usd_per_m_output", "error"]


@app.command()
def run(
    config: Path = typer.Argument(..., help="Sweep YAML, e.g. configs/sweeps/smoke.yaml."),
    out: Path = typer.Option(Path("results"), "--out", help="Directory that receives results/<run_id>/."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run dir; finished points are skipped."),
    executor: str = typer.Option("local", "--executor", help="local (groups one after another) | ray (one Ray "
                                 "task per server group, num_gpus = tensor-parallel size)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address for --executor ray, e.g. "
                                       "auto or ray://head:10001 (default: start a local Ray instance)."),
    json_out: bool = typer.Option(False, "--json", help="Print the points as JSON instead of a table."),
) -> None:
    """Measure: run a sweep on its engine and write results/<run_id>/ (exit 1 if any point failed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.config.sweep import load_sweep
    from bench.sweep.run import run_sweep

    if address is not None and executor != "ray":
        raise UserInputError("--address is only used with --executor ray")
    sweep = load_sweep(config)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False, disable=json_out) as bar:
        task = bar.add_task("starting", total=None)

        def on_event(e: dict[str, Any]) -> None:
            kind = e["type"]
            if kind == "start":
                bar.update(task, total=e["requests"], description=f"{e['points']} points -> {e['run_dir']}")
                if e["skipped"]:
                    bar.console.print(f"resume: skipping {e['skipped']} finished point(s)")
            elif kind == "server_starting":
                s = e["server"]
                bar.update(task, description=f"starting {s['model']} {s['dtype']} q={s['quantization']}")
            elif kind == "config_changed":
                bar.console.print(f"[yellow]{e['message']}[/]", highlight=False)
            elif kind == "server_failed":
                bar.console.print(f"[red]{e['error']}[/]", highlight=False)
            elif kind == "point_start":
                lp = e["point"].load
                load = f"c={lp.concurrency}" if lp.concurrency else f"rate={lp.request_rate}/s"
                bar.update(task, description=f"point {e['index']}: {load}")
            elif kind == "request_done":
                bar.advance(task)
            elif kind == "point_done" and e.get("skipped_requests"):
                bar.advance(task, e["skipped_requests"])

        summary = run_sweep(sweep, out_root=out, resume=resume, progress=on_event, executor=executor,
                            ray_address=address)
    if json_out:
        print_json(summary.rows)
    else:
        print_table(f"{sweep.name}: {summary.run_dir}", summary.rows, SUMMARY_COLUMNS)
        eff = summary.sweep_efficiency
        console.print(f"{summary.points_run} point(s) run, {summary.points_skipped} skipped, "
                      f"{summary.points_failed} failed; {summary.server_starts} server start(s); "
                      f"wall {summary.wall_s:.1f} s; sweep efficiency {eff:.2f}" if eff is not None else "")
    if summary.points_failed:
        raise typer.Exit(1)


@app.command()
def sim(
    port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1 (0 = any free port)."),
    model: str = typer.Option("sim-model", "--model", help="Model id reported by /v1/models."),
    ttft_ms: float = typer.Option(50.0, "--ttft-ms", help="Time to first token after getting a slot."),
    itl_ms: float = typer.Option(10.0, "--itl-ms", help="Gap between content chunks."),
    tokens_per_chunk: int = typer.Option(1, "--tokens-per-chunk", help="Tokens per SSE chunk."),
    output_tokens: int | None = typer.Option(
        None, "--output-tokens", help="Simulated EOS position (default: always max_tokens)."
    ),
    max_concurrency: int | None = typer.Option(
        None, "--max-concurrency", help="Concurrent streams; more wait in a FIFO queue (default unlimited)."
    ),
    error_rate: float = typer.Option(0.0, "--error-rate", help="Fraction of requests answered HTTP 500."),
    cut_rate: float = typer.Option(0.0, "--cut-rate", help="Fraction of streams cut after half the chunks."),
    jitter_ms: float = typer.Option(0.0, "--jitter-ms", help="Uniform +-jitter on TTFT and each gap."),
    seed: int = typer.Option(0, "--seed", help="Seed for jitter and fault injection."),
    usage_mode: str = typer.Option("correct", "--usage-mode", help="correct | missing | wrong."),
    usage_offset: int = typer.Option(1, "--usage-offset", help="N added to completion_tokens (wrong)."),
    ping: bool = typer.Option(False, "--ping", help="Send ': ping' SSE comments between chunks."),
    spin_ms: float = typer.Option(2.0, "--spin-ms", help="Precise-sleep window before each chunk (0 = off)."),
) -> None:
    """Run the simulated OpenAI-compatible streaming server until Ctrl-C (for tests and dry runs)."""
    from bench.sim import serve_forever, sim_config_from_options

    cfg = sim_config_from_options(
        model=model, ttft_ms=ttft_ms, itl_ms=itl_ms, tokens_per_chunk=tokens_per_chunk,
        output_tokens=output_tokens, max_concurrent_streams=max_concurrency, error_rate=error_rate,
        cut_rate=cut_rate, jitter_ms=jitter_ms, seed=seed, usage_mode=usage_mode,
        usage_offset_tokens=usage_offset, ping=ping, spin_ms=spin_ms,
    )

    def ready(url: str) -> None:
        console.print(f"simulated server listening on {url}  (OpenAI API under {url}/v1; Ctrl-C stops)")

    try:
        serve_forever(cfg, port=port, on_ready=ready)
    except KeyboardInterrupt:
        console.print("simulated server stopped")
    except OSError as e:
        fail(f"--port {port}: cannot listen on 127.0.0.1 ({e.strerror or e})")


# --- economics: cost, margin, plan (logic in bench/cost.py and bench/margin.py) ----------------


def _user_errors(fn: Any) -> Any:
    """Library UserInputError -> the one-line error and exit code 2, also when run via CliRunner."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserInputError as e:
            fail(str(e))

    return wrapper


def _econ_rate(
    catalog: Any, gpu: str | None, tier: str, usd_per_gpu_hour: float | None, usd_per_cny: float | None
) -> tuple[float, str]:
    """$/GPU-hour from --usd-per-gpu-hour, else from --gpu at --tier (a rental tier or 'tco')."""
    from bench.econ.cost import require_positive

    if usd_per_gpu_hour is not None:
        return require_positive("usd_per_gpu_hour", usd_per_gpu_hour), "given"
    if gpu is None:
        raise UserInputError("give --gpu (with --tier) or --usd-per-gpu-hour")
    return catalog.usd_per_gpu_hour(gpu, tier, usd_per_cny), f"{gpu}/{tier}"


def _econ_fx(catalog: Any, usd_per_cny: float | None) -> float | None:
    from bench.econ.cost import require_positive

    if usd_per_cny is not None:
        return require_positive("usd_per_cny", usd_per_cny)
    return catalog.exchange_rates.usd_per_cny


def _load_points(results: Path) -> Any:
    """Points table of a run dir (bench.sweep.store.load_results), or of a parquet file."""
    from bench.sweep.store import load_results

    try:
        return load_results(results)
    except FileNotFoundError as e:
        raise UserInputError(f"--results: {e}") from None


def _throughput_source(
    tok_s_per_gpu: float | None,
    results: Path | None,
    *,
    model: str | None = None,
    gpu: str | None = None,
    count: int = 1,
    quant: str | None = None,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    slo_percentile: str = "p90",
) -> tuple[float, str, dict[str, Any] | None]:
    """Output tok/s per GPU for planning, and where it came from: given, measured or estimated.

    Hook: when neither --tok-s-per-gpu nor --results is given, the analytical (roofline) estimate
    for model/gpu/count/quant belongs here; until it is wired in, that is a user error.
    Returns (tok_s, source label, the measured point row or None).
    """
    from bench.econ.cost import require_positive
    from bench.econ.margin import meets_slo

    if tok_s_per_gpu is not None and results is not None:
        raise UserInputError("give either --tok-s-per-gpu or --results, not both")
    if tok_s_per_gpu is not None:
        return require_positive("tok_s_per_gpu", tok_s_per_gpu), "given (--tok-s-per-gpu)", None
    if results is None:
        raise UserInputError("give --tok-s-per-gpu or --results (analytical estimate not available here yet)")
    df = _load_points(results)
    rows = [
        r
        for r in df.to_dict("records")
        if r.get("status", "ok") == "ok"
        and isinstance(r.get("output_tok_s_per_gpu"), (int, float))
        and r["output_tok_s_per_gpu"] > 0
    ]
    for col, want in (("model", model), ("gpu_type", gpu), ("quantization", quant)):
        if want is None or not rows or col not in rows[0]:
            continue
        have = sorted({str(r.get(col)) for r in rows})
        if want not in have:
            raise UserInputError(f"--results has no ok point with {col} {want!r}; allowed: {', '.join(have)}")
        rows = [r for r in rows if str(r.get(col)) == want]
    feasible = [r for r in rows if meets_slo(r, slo_ttft_ms, slo_tpot_ms, slo_percentile)]
    if not feasible:
        raise UserInputError(
            f"--results: no ok point meets the SLO (ttft {slo_ttft_ms} ms, tpot {slo_tpot_ms} ms "
            f"at {slo_percentile}); relax --slo-ttft-ms/--slo-tpot-ms"
        )
    best = max(feasible, key=lambda r: r["output_tok_s_per_gpu"])
    return float(best["output_tok_s_per_gpu"]), f"measured: {results} point {best.get('point_id')}", best


@app.command()
@_user_errors
def cost(
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml, e.g. h100."),
    tier: str | None = typer.Option(None, "--tier", help="Rental tier or 'tco' (default: every tier)."),
    tok_s_per_gpu: float = typer.Option(
        ..., "--tok-s-per-gpu", help="Tokens/s per GPU (cost is per M of these)."
    ),
    utilization: float = typer.Option(1.0, "--utilization", help="Fleet utilization in (0, 1]; cost x 1/U."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the tier rate."),
    joules_per_token: float | None = typer.Option(None, "--joules-per-token", help="Adds energy $/M tokens."),
    usd_per_kwh: float = typer.Option(
        0.08, "--usd-per-kwh", help="Electricity price for --joules-per-token."
    ),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """$/M tokens for a GPU at a rental tier or owned TCO, at a given throughput and utilization."""
    from bench.config.hardware import load_hardware
    from bench.econ.cost import energy_usd_per_m_tokens, usd_per_m_tokens

    catalog = load_hardware()
    fx = _econ_fx(catalog, usd_per_cny)
    if usd_per_gpu_hour is not None:
        rates = [
            (gpu or "-", "given", _econ_rate(catalog, gpu, "", usd_per_gpu_hour, fx)[0], "--usd-per-gpu-hour")
        ]
    else:
        if gpu is None:
            raise UserInputError(f"give --gpu ({', '.join(catalog.gpus)}) or --usd-per-gpu-hour")
        spec = catalog.gpu(gpu)
        tiers = [tier] if tier is not None else spec.cost_tiers()
        if not tiers:
            raise UserInputError(f"gpu {gpu!r} has no cost tiers; give --usd-per-gpu-hour")
        rates = []
        for t in tiers:
            src = spec.tiers[t].source if t in spec.tiers else (spec.tco.source if spec.tco else "")
            rates.append((gpu, t, catalog.usd_per_gpu_hour(gpu, t, fx), src))
    rows = []
    for g, t, rate, src in rates:
        row: dict[str, Any] = {
            "gpu": g,
            "tier": t,
            "usd_per_gpu_hour": rate,
            "tok_s_per_gpu": tok_s_per_gpu,
            "utilization": utilization,
            "usd_per_m_tokens": usd_per_m_tokens(tok_s_per_gpu, rate, utilization),
        }
        if joules_per_token is not None:
            row["energy_usd_per_m_tokens"] = energy_usd_per_m_tokens(joules_per_token, usd_per_kwh)
        row["source"] = src
        rows.append(row)
    if json_out:
        print_json(rows)
    else:
        print_table("Cost per million tokens (sources: --json)", rows, [c for c in rows[0] if c != "source"])


@app.command()
@_user_errors
def margin(
    price: str = typer.Option(
        ..., "--price", help="Price-book entry <model>@<provider>, e.g. glm-4.5-air@zai."
    ),
    results: Path | None = typer.Option(None, "--results", help="Run dir: margin of every measured point."),
    tok_s_per_gpu: float | None = typer.Option(
        None, "--tok-s-per-gpu", help="What-if: output tok/s per GPU."
    ),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id for the $/GPU-hour (what-if mode)."),
    tier: str = typer.Option("neocloud", "--tier", help="Rental tier or 'tco'."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    utilization: float = typer.Option(1.0, "--utilization", help="Fleet utilization in (0, 1]."),
    input_tokens: float | None = typer.Option(
        None, "--input-tokens", help="Input tokens/request (default 2000)."
    ),
    output_tokens: float | None = typer.Option(
        None, "--output-tokens", help="Output tokens/request (default 500)."
    ),
    cached_share: float = typer.Option(
        0.0, "--cached-share", help="Share of input tokens that hit the cache."
    ),
    target_margin: float = typer.Option(0.0, "--target-margin", help="Gross margin the break-evens aim at."),
    price_decline: list[float] = typer.Option(
        [0.5, 0.8], "--price-decline", help="Yearly list-price cut(s)."
    ),
    years: int = typer.Option(1, "--years", help="Years of price decline to show."),
    hw_decline: float = typer.Option(0.0, "--hw-decline", help="Yearly $/GPU-hour decline."),
    sensitivity: bool = typer.Option(
        False, "--sensitivity", help="Tornado rows: margin vs each input +-20%."
    ),
    prefill_fraction: float = typer.Option(
        0.0, "--prefill-fraction", help="GPU-time share of prefill (cache)."
    ),
    curve: bool = typer.Option(False, "--curve", help="Margin at utilization 0.05..1."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help="Results mode: TTFT limit."),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help="Results mode: TPOT limit."),
    slo_percentile: str = typer.Option("p90", "--slo-percentile", help="p50 | p90 | p99."),
    subscription_fee: float | None = typer.Option(None, "--subscription-fee", help="Monthly plan fee."),
    fee_currency: str = typer.Option("USD", "--fee-currency", help="USD | CNY."),
    requests_per_month: float | None = typer.Option(
        None, "--requests-per-month", help="(Median) requests/month."
    ),
    requests_sigma: float = typer.Option(0.0, "--requests-sigma", help="Lognormal spread of requests/month."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Gross margin at a price-book entry: of measured points (--results) or a given throughput."""
    from bench.config.hardware import convert_to_usd, load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import margin as mg

    catalog = load_hardware()
    fx = _econ_fx(catalog, usd_per_cny)
    entry = load_price_book().get(price)
    if results is not None:
        if tok_s_per_gpu is not None:
            raise UserInputError("give either --tok-s-per-gpu or --results, not both")
        rate = (
            None
            if usd_per_gpu_hour is None and gpu is None
            else _econ_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)[0]
        )
        fixed_mix = None
        if input_tokens is not None or output_tokens is not None:
            fixed_mix = mg.TrafficMix(
                input_tokens if input_tokens is not None else 2000.0,
                output_tokens if output_tokens is not None else 500.0,
                cached_share,
            )
        rows = mg.margin_per_point(
            _load_points(results),
            entry,
            utilization,
            mix=fixed_mix,
            cached_share=cached_share,
            usd_per_gpu_hour=rate,
            usd_per_cny=fx,
        )
        for r in rows:
            r["meets_slo"] = mg.meets_slo(r, slo_ttft_ms, slo_tpot_ms, slo_percentile)
        best = mg.best_point(rows, slo_ttft_ms, slo_tpot_ms, slo_percentile)
        if json_out:
            print_json({"price": price, "utilization": utilization, "points": rows, "best_under_slo": best})
            return
        cols = [
            "point_id",
            "model",
            "quantization",
            "gpu_count",
            "concurrency",
            "request_rate",
            "output_tok_s_per_gpu",
            f"ttft_ms_{slo_percentile}",
            f"tpot_ms_{slo_percentile}",
            "cost_usd_per_m_output_tokens",
            "gross_margin",
            "meets_slo",
        ]
        print_table(f"Margin per point at {price}, U={utilization:g}", rows, cols)
        console.print(
            f"best under SLO: {best['point_id']} gross margin {best['gross_margin']:.1%}"
            if best
            else "no point meets the SLO"
        )
        return
    if tok_s_per_gpu is None:
        raise UserInputError("give --tok-s-per-gpu (what-if) or --results (measured points)")
    rate, rate_src = _econ_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    mix = mg.TrafficMix(
        input_tokens if input_tokens is not None else 2000.0,
        output_tokens if output_tokens is not None else 500.0,
        cached_share,
    )
    inputs = {
        "price": price,
        "currency": entry.currency,
        "rate": rate_src,
        "usd_per_gpu_hour": rate,
        "output_tok_s_per_gpu": tok_s_per_gpu,
        "utilization": utilization,
        "input_tokens": mix.input_tokens,
        "cached_share": mix.cached_share,
        "output_tokens": mix.output_tokens,
    }
    subscription = None
    if subscription_fee is not None or requests_per_month is not None:
        if subscription_fee is None or requests_per_month is None:
            raise UserInputError("a subscription needs both --subscription-fee and --requests-per-month")
        if fee_currency not in ("USD", "CNY"):
            raise UserInputError(f"--fee-currency must be one of USD, CNY (got {fee_currency!r})")
        fee_usd = convert_to_usd(subscription_fee, fee_currency, fx, what="--subscription-fee")
        subscription = mg.SubscriptionQuery(fee_usd, requests_per_month, requests_sigma)
    out: dict[str, Any] = {
        "inputs": inputs,
        **mg.what_if(
            mix, entry, tok_s_per_gpu, rate, utilization, target_margin=target_margin, years=years,
            price_declines=price_decline, hw_decline=hw_decline, sensitivity=sensitivity,
            prefill_fraction=prefill_fraction, curve=curve, subscription=subscription, usd_per_cny=fx,
        ),
    }
    break_even, scenarios = out["break_even"], out["price_decline"]
    if json_out:
        print_json(out)
        return
    print_table(
        f"Margin at {price}",
        [{**inputs, **out["margin"]}],
        [
            "price",
            "rate",
            "usd_per_gpu_hour",
            "output_tok_s_per_gpu",
            "utilization",
            "input_tokens",
            "cached_share",
            "output_tokens",
            "revenue_usd_per_request",
            "cost_usd_per_request",
            "gross_margin",
            "margin_usd_per_m_tokens",
            "cost_usd_per_m_output_tokens",
        ],
    )
    print_table(f"Break-even for gross margin {target_margin:g}", [break_even])
    for d, rows in scenarios.items():
        print_table(f"Price falls {float(d):.0%} a year (hardware {hw_decline:.0%} a year)", rows)
    if sensitivity:
        print_table("Sensitivity of gross margin (tornado)", out["sensitivity"])
    if curve:
        print_table("Gross margin vs utilization", out["curve"])
    if "subscription" in out:
        print_table("Subscriber", [out["subscription"]["one_subscriber"]])
        if "population" in out["subscription"]:
            print_table(
                f"Subscribers (lognormal requests, sigma {requests_sigma:g})",
                [out["subscription"]["population"]],
            )


@app.command()
@_user_errors
def plan(
    tokens_per_day: float | None = typer.Option(
        None, "--tokens-per-day", help="Input + output tokens per day (optional for the estimate)."
    ),
    model: str | None = typer.Option(None, "--model", help="Catalog model (filters --results)."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml."),
    count: int = typer.Option(1, "--count", help="GPUs per replica (e.g. 8 for TP8)."),
    quant: str | None = typer.Option(None, "--quant", help="Quantization (filters --results)."),
    tier: str = typer.Option("neocloud", "--tier", help="Rental tier or 'tco'."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    tok_s_per_gpu: float | None = typer.Option(
        None, "--tok-s-per-gpu", help="SLO-feasible output tok/s per GPU."
    ),
    results: Path | None = typer.Option(
        None, "--results", help="Run dir: best measured point under the SLO."
    ),
    price: str | None = typer.Option(None, "--price", help="Price-book entry for revenue and margin."),
    input_tokens: float = typer.Option(2000.0, "--input-tokens", "--isl", help="Input tokens per request."),
    output_tokens: float = typer.Option(500.0, "--output-tokens", "--osl", help="Output tokens per request."),
    cached_share: float = typer.Option(
        0.0, "--cached-share", help="Share of input tokens that hit the cache."
    ),
    peak_to_average: float = typer.Option(1.0, "--peak-to-average", help="Peak / average traffic, >= 1."),
    max_utilization: float = typer.Option(1.0, "--max-utilization", help="Utilization allowed at peak."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help="TTFT limit (with --results)."),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help="TPOT limit (with --results)."),
    slo_percentile: str = typer.Option("p90", "--slo-percentile", help="p50 | p90 | p99."),
    slo: str | None = typer.Option(
        None, "--slo", help="SLO like 'tpot_ms<=50,ttft_ms<=2000' (sets --slo-*-ms; the estimate's filter)."
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Estimate: compare H100/H200/H20/B200/910B x quants."
    ),
    tp: int | None = typer.Option(None, "--tp", help="Estimate: tensor-parallel size (default --count)."),
    ep: bool = typer.Option(False, "--ep", help="Estimate: expert parallelism over the TP group."),
    kv_bits: float | None = typer.Option(None, "--kv-bits", help="Estimate: KV-cache bits (16, 8)."),
    concurrency: list[int] | None = typer.Option(
        None, "--concurrency", help="Estimate: concurrency levels (repeat; default 1..256)."
    ),
    private_usd_per_year: float | None = typer.Option(
        None, "--private-usd-per-year", help="Also price the fleet as a private deployment."
    ),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fleet sizing: GPUs, monthly cost and margin to serve --tokens-per-day at an SLO-feasible throughput."""
    from bench.config.hardware import load_hardware
    from bench.config.prices import load_price_book
    from bench.econ import margin as mg

    catalog = load_hardware()
    fx = _econ_fx(catalog, usd_per_cny)
    if gpu is not None:
        catalog.gpu(gpu)
    from bench.planner.roofline import parse_slo

    slo_map = parse_slo(slo)
    slo_ttft_ms = slo_map.get("ttft_ms", slo_ttft_ms)
    slo_tpot_ms = slo_map.get("tpot_ms", slo_tpot_ms)
    est_out = None
    if tok_s_per_gpu is None and results is None:
        est_slo = {**slo_map, **{k: v for k, v in (("ttft_ms", slo_ttft_ms), ("tpot_ms", slo_tpot_ms)) if v}}
        est_out = _plan_estimate(
            model, gpu, count, quant, input_tokens, output_tokens, est_slo, tp, ep, kv_bits,
            concurrency, compare, tier, price, cached_share, usd_per_gpu_hour, catalog, fx,
        )
        if tokens_per_day is None or est_out["best_under_slo"] is None:
            print_json({"estimate": est_out}) if json_out else _print_estimate(est_out)
            if tokens_per_day is not None:
                raise UserInputError("no estimated point meets the SLO: no fleet to size; relax --slo")
            return
        tok_s_per_gpu = est_out["best_under_slo"]["output_tok_s_per_gpu"]
    elif tokens_per_day is None:
        raise UserInputError("--tokens-per-day is required with --tok-s-per-gpu or --results")
    tok, source, _ = _throughput_source(
        tok_s_per_gpu,
        results,
        model=model,
        gpu=gpu,
        count=count,
        quant=quant,
        slo_ttft_ms=slo_ttft_ms,
        slo_tpot_ms=slo_tpot_ms,
        slo_percentile=slo_percentile,
    )
    rate, rate_src = _econ_rate(catalog, gpu, tier, usd_per_gpu_hour, fx)
    entry = load_price_book().get(price) if price is not None else None
    mix = mg.TrafficMix(input_tokens, output_tokens, cached_share)
    fp = mg.fleet_size(
        tokens_per_day,
        mix,
        tok,
        rate,
        peak_to_average=peak_to_average,
        gpus_per_replica=count,
        max_utilization_at_peak=max_utilization,
        price=entry,
        usd_per_cny=fx,
    )
    row = {
        "model": model,
        "gpu": gpu,
        "gpus_per_replica": count,
        "rate": rate_src,
        "usd_per_gpu_hour": rate,
        "output_tok_s_per_gpu": tok,
        "throughput_source": source,
        "price": price,
        **fp.to_dict(),
    }
    out: dict[str, Any] = {"plan": row}
    if est_out is not None:
        best = est_out["best_under_slo"]
        row["throughput_source"] = (
            f"estimate (roofline; best point under SLO: concurrency {best['concurrency']})"
        )
        out["estimate"] = est_out
        if not json_out:
            _print_estimate(est_out)
    if private_usd_per_year is not None:
        out["private_deployment"] = mg.private_deployment(fp.gpus, private_usd_per_year, rate)
    if json_out:
        print_json(out)
        return
    print_table(
        f"Fleet for {tokens_per_day:.3g} tokens/day",
        [row],
        [
            "model",
            "gpu",
            "gpus_per_replica",
            "rate",
            "output_tok_s_per_gpu",
            "throughput_source",
            "requests_per_day",
            "gpus_busy_avg",
            "replicas",
            "gpus",
            "avg_utilization",
            "monthly_cost_usd",
            "cost_usd_per_m_tokens",
            "monthly_revenue_usd",
            "gross_margin",
        ],
    )
    if "private_deployment" in out:
        print_table("As a private deployment", [out["private_deployment"]])


# --- roofline estimate (logic in bench/roofline.py) -------------------------------------------


def _plan_estimate(
    model: str | None, gpu: str | None, count: int, quant: str | None, isl: float, osl: float,
    slo: dict[str, float], tp: int | None, ep: bool, kv_bits: float | None, concurrency: list[int] | None,
    compare: bool, tier: str, price: str | None, cached_share: float, usd_per_gpu_hour: float | None,
    catalog: Any, fx: float | None,
) -> dict[str, Any]:
    """`plan` without --tok-s-per-gpu / --results: the analytical estimate (bench.planner.roofline.plan_estimate)."""
    from bench.config.prices import load_price_book
    from bench.planner import roofline

    if model is None or gpu is None or quant is None:
        raise UserInputError(
            "the estimate needs --model, --gpu and --quant (or give --tok-s-per-gpu / --results)"
        )
    return roofline.plan_estimate(
        model, gpu, count, quant, int(isl), int(osl), slo=slo, tp=tp, ep=ep, kv_bits=kv_bits,
        concurrencies=tuple(concurrency) if concurrency else roofline.DEFAULT_CONCURRENCIES, tier=tier,
        price=load_price_book().get(price) if price is not None else None, cached_share=cached_share,
        usd_per_gpu_hour=usd_per_gpu_hour, usd_per_cny=fx,
        compare_gpus=roofline.COMPARE_GPUS if compare else None, catalog=catalog,
    )


def _print_estimate(e: dict[str, Any]) -> None:
    """Tables of a plan estimate; every title says ESTIMATE so nobody mistakes it for a measurement."""
    console.print(
        f"[bold]ESTIMATE[/] (analytical roofline, not measured): {e['model']} on {e['count']}x{e['gpu']} "
        f"{e['quant']} (tp {e['tp']}{', ep' if e['ep'] else ''}, {e['replicas']} replica(s), GEMMs at "
        f"{e['compute_precision']}), ISL {e['isl']} / OSL {e['osl']}; "
        f"efficiency factors: {e['efficiency_source']}",
        highlight=False, soft_wrap=True,
    )
    mem = e["memory"]
    print_table("Memory fit per GPU (estimate)", [mem], [
        "weights_gib_per_gpu", "usable_gib_per_gpu", "kv_budget_gib_per_gpu", "kv_kib_per_token_per_gpu",
        "context_tokens", "max_concurrent_seqs", "fits"])
    for n in e["notes"]:
        console.print(f"note: {n}", highlight=False, soft_wrap=True)
    cols = ["concurrency", "batch_per_replica", "tpot_ms", "ttft_ms", "interactivity_tok_s_user",
            "output_tok_s_per_gpu", "decode_bound", "meets_slo", "usd_per_m_output_tokens"]
    if any("gross_margin" in r for r in e["curve"]):
        cols.append("gross_margin")
    rate = f"{e['tier']} ${e['usd_per_gpu_hour']:.3g}/GPU-h" if e["usd_per_gpu_hour"] else "no rate known"
    print_table(f"Throughput-latency curve (estimate; $ at {rate})", e["curve"], cols)
    best = e["best_under_slo"]
    slo = ", ".join(f"{k}<={v:g}" for k, v in e["slo"].items()) or "none"
    console.print(
        f"best under SLO ({slo}): concurrency {best['concurrency']}, "
        f"{best['output_tok_s_per_gpu']:.4g} output tok/s/GPU, TPOT {best['tpot_ms']:.4g} ms, "
        f"TTFT {best['ttft_ms']:.4g} ms (estimate)"
        if best else f"no estimated point meets the SLO ({slo})", highlight=False, soft_wrap=True,
    )
    if e["cost_by_tier"]:
        print_table("$/M tokens by price tier at the best point (estimate)", e["cost_by_tier"],
                    [c for c in e["cost_by_tier"][0] if c != "source"])
    if e.get("compare"):
        cols = ["gpu", "quant", "fits", "max_concurrent_seqs", "best_concurrency", "tpot_ms",
                "output_tok_s_per_gpu", "tier", "usd_per_m_output_tokens"]
        cols += ["gross_margin"] if any("gross_margin" in r for r in e["compare"]) else []
        print_table("GPU x quantization (estimate; best point under the SLO; all fields: --json)",
                    e["compare"], cols)


@app.command()
@_user_errors
def calibrate(
    results: list[Path] = typer.Argument(..., help="Run dir(s) with measured points."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Fit and print; do not write configs/roofline.yaml."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fit roofline efficiency factors per GPU/quantization from measured runs (configs/roofline.yaml)."""
    import pandas as pd

    from bench.planner import roofline

    df = pd.concat([_load_points(r) for r in results], ignore_index=True)
    fits = roofline.calibrate(df)
    if not dry_run:
        roofline.save_calibration(fits, source=", ".join(str(r) for r in results))
    rows = [{**f.__dict__, "written": not dry_run} for f in fits]
    if json_out:
        print_json(rows)
    else:
        print_table("Calibrated roofline factors", rows)


# --- cost report (logic in bench/report.py) ---------------------------------------------------


@app.command()
@_user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="One or more results/<run_id> directories (several = compare)."),
    price: str | None = typer.Option(
        None, "--price", help="Price-book entry <model>@<provider> (default: the model's, or its twin's, entry)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default reports/<run_id>)."),
    utilization: float = typer.Option(1.0, "--utilization", help="Fleet utilization in (0, 1] for margins."),
    slo: list[str] = typer.Option(
        [], "--slo", help="Latency target [name=]TTFT_MS/TPOT_MS ('-' = no limit); repeat. Default: a ladder."
    ),
    slo_percentile: str = typer.Option("p90", "--slo-percentile", help="p50 | p90 | p99."),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print the headline and paths as JSON."),
) -> None:
    """The cost report: report.md, a self-contained report.html and PNG figures."""
    from bench.report.build import build_report, parse_slo

    res = build_report(runs, out, price=price, utilization=utilization, slos=[parse_slo(s) for s in slo] or None,
                       slo_percentile=slo_percentile, usd_per_cny=usd_per_cny)
    if json_out:
        print_json(res.to_dict())
        return
    rows = [{"slo": h["slo_text"], "point": h.get("point_id") or "none meets it", "usd_per_m_output":
             h.get("usd_per_m_output"), "gross_margin": h.get("gross_margin"),
             "break_even_utilization": h.get("break_even_utilization")} for h in res.headline]
    print_table(f"Cheapest configuration per SLO (margin at U={utilization:g})", rows)
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    console.print(f"wrote {res.markdown_path}, {res.html_path} and {len(res.figures)} figures", highlight=False)


TUNE_COLUMNS = ["status", "dtype", "quantization", "max_num_seqs", "workload", "concurrency", "request_rate"]


@app.command()
@_user_errors
def tune(
    config: Path = typer.Argument(..., help="Sweep YAML; its load list is the grid the search bisects."),
    slo: str = typer.Option(..., "--slo", help="Aggregate SLO, e.g. 'ttft_ms_p99<=2000,tpot_ms_p50<=50'."),
    objective: str = typer.Option("usd_per_m_output", "--objective",
                                  help="usd_per_m_output | usd_per_m_total (min) or a throughput column (max)."),
    verify: bool = typer.Option(False, "--verify", help="Also measure the rest of the grid and report whether "
                                "the search found the grid's best."),
    out: Path = typer.Option(Path("results"), "--out", help="Directory that receives results/<run_id>/."),
    resume: Path | None = typer.Option(None, "--resume", help="Reuse the points already measured in this run dir."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Measure adaptively: the best config meeting an SLO, bisecting each load ladder toward its SLO knee."""
    from bench.config.sweep import load_sweep
    from bench.sweep.tune import check_objective, feasible, parse_slo, run_tune

    constraints = parse_slo(slo)
    check_objective(objective)
    sweep = load_sweep(config)

    def on_event(e: dict[str, Any]) -> None:
        if json_out:
            return
        if e["type"] == "point_done":
            r = e["row"]
            load = f"c={r['concurrency']}" if r.get("concurrency") else f"rate={r.get('request_rate')}/s"
            ok = "meets SLO" if feasible(r, constraints) else "misses SLO"
            err_console.print(f"  {r.get('quantization')} {r.get('dtype')} {r.get('workload')} {load}: "
                              f"{r['status']}, {ok}", highlight=False)
        elif e["type"] == "server_failed":
            err_console.print(f"[red]{e['error']}[/]", highlight=False, soft_wrap=True)

    result = run_tune(sweep, constraints, objective, out_root=out, resume=resume, verify=verify,
                      progress=on_event)
    if json_out:
        print_json(result.to_dict())
        return
    metrics = list(dict.fromkeys(c.metric for c in constraints))
    rows = [{**r, "meets_slo": feasible(r, constraints)} for r in result.rows]
    print_table(f"tune {sweep.name}: {result.run_dir}", rows, TUNE_COLUMNS + metrics + [objective, "meets_slo"])
    print_table("Knee per ladder (highest load meeting the SLO)", [lad.describe() for lad in result.ladders],
                ["quantization", "dtype", "max_num_seqs", "workload", "load_kind", "grid", "measured", "knee"])
    slo_text = ", ".join(str(c) for c in constraints)
    if result.best is None:
        console.print(f"no measured point meets the SLO ({slo_text})", highlight=False)
    else:
        b = result.best
        load = f"concurrency {b['concurrency']}" if b.get("concurrency") else f"rate {b.get('request_rate')}/s"
        console.print(f"best under SLO ({slo_text}): {b['model']} {b['dtype']} q={b['quantization']} "
                      f"max_num_seqs={b['max_num_seqs']} tp={b['tensor_parallel_size']} {b['workload']} {load}: "
                      f"{objective} = {b[objective]:.4g}", highlight=False, soft_wrap=True)
    found = {None: "not verified (use --verify)", True: "yes", False: "no"}[result.found_grid_best]
    console.print(f"search measured {result.points_measured} of {result.grid_size} grid points"
                  + (f" (+{result.verify_measured} to verify)" if result.verify_measured else "")
                  + f"; found the grid's best: {found}", highlight=False)


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app()
    except UserInputError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
