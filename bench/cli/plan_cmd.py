"""`maas-bench plan` (capacity and fleet planning; --check-published grades the planner) and
`maas-bench calibrate` (fit the planner's efficiency factors on measured runs).

Argument plumbing and printing only: the estimate comes from bench.planner.estimate, fleet sizing and
deployments from bench.econ.fleet, the throughput choice from bench.econ.queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.cli import money_options as opts
from bench.cli.output import print_json, print_table, say
from bench.econ.cost import DEFAULT_MAX_UTILIZATION_AT_PEAK, DEFAULT_PEAK_TO_AVERAGE, DEFAULT_UTILIZATION
from bench.econ.queries import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
from bench.errors import UserInputError

PLAN_COLUMNS = ["model", "gpu", "gpus_per_replica", "rate", "output_tok_s_per_gpu", "throughput_source",
                "requests_per_day", "gpus_busy_avg", "replicas", "gpus", "avg_utilization", "monthly_cost_usd",
                "cost_usd_per_m_tokens", "monthly_revenue_usd", "revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour",
                "gross_margin"]


def plan(
    tokens_per_day: float | None = typer.Option(
        None, "--tokens-per-day", help="Input + output tokens per day (optional for the estimate)."
    ),
    model: str | None = typer.Option(None, "--model", help="Catalog model (filters --results)."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml."),
    count: int = typer.Option(1, "--count", help="GPUs per replica (e.g. 8 for TP8)."),
    quant: str | None = typer.Option(None, "--quant", help="Quantization (filters --results)."),
    tier: str | None = typer.Option(None, "--tier", help=opts.TIER_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the rate."),
    output_tok_s_per_gpu: float | None = typer.Option(None, "--output-tok-s-per-gpu",
                                                      help="SLO-feasible " + opts.OUT_TOK_HELP),
    total_tok_s_per_gpu: float | None = typer.Option(None, "--total-tok-s-per-gpu",
                                                     help="SLO-feasible " + opts.TOTAL_TOK_HELP),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=opts.OLD_TOK_HELP, hidden=True),
    results: Path | None = typer.Option(None, "--results", help="Run dir: best measured point under the SLO."),
    price: str | None = typer.Option(None, "--price", help="Price-book entry for revenue and margin."),
    input_tokens: float = typer.Option(DEFAULT_INPUT_TOKENS, "--input-tokens", "--isl",
                                       help="Input tokens per request."),
    output_tokens: float = typer.Option(DEFAULT_OUTPUT_TOKENS, "--output-tokens", "--osl",
                                        help="Output tokens per request."),
    cached_share: float = typer.Option(0.0, "--cached-share", help="Share of input tokens that hit the cache."),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=opts.U_HELP + " Prices the estimate "
                                      "(curve, tiers, --compare); a fleet for --tokens-per-day gets its average U "
                                      "from --peak-to-average and --max-utilization."),
    peak_to_average: float = typer.Option(DEFAULT_PEAK_TO_AVERAGE, "--peak-to-average",
                                          help="Peak / average traffic, >= 1 (default: bench.econ.cost)."),
    max_utilization: float = typer.Option(DEFAULT_MAX_UTILIZATION_AT_PEAK, "--max-utilization",
                                          help="Utilization allowed at peak, (0, 1] (default: bench.econ.cost; "
                                          "1 = no headroom)."),
    slo: str | None = typer.Option(None, "--slo", help=opts.SLO_HELP + " The simulated estimate reads each term at "
                                   "its percentile; --closed-form reads every term as a limit on its point value."),
    closed_form: bool = typer.Option(False, "--closed-form", help="Estimate: the closed-form serving formulas "
                                     "instead of the scheduler simulation (faster; no queueing, one value per "
                                     "metric)."),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Estimate: vLLM max_num_seqs per replica "
                                            "(default: vLLM's for the GPU: 1024 on >= 70 GiB GPUs, 256 others)."),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="Estimate: vLLM's "
                                                      "token budget per step (default: vLLM's for the GPU: 8192 on "
                                                      "H100/H200, 16384 on >= 160 GiB GPUs, 2048 others)."),
    compare: bool = typer.Option(False, "--compare", help="Estimate: compare H100/H200/H20/B200/910B x quants."),
    tp: int | None = typer.Option(None, "--tp", help="Estimate: tensor-parallel size (default --count)."),
    ep: bool = typer.Option(False, "--ep", help="Estimate: expert parallelism over the TP group."),
    dp_attention: int = typer.Option(1, "--dp-attention", help="Estimate: data-parallel attention groups per "
                                     "replica (divides --tp; SGLang --dp with --enable-dp-attention; 1 = off)."),
    burst: bool = typer.Option(False, "--burst", help="Estimate: each concurrency is one wave of requests sent "
                               "at once (prefill wave, then decode), not a steady state."),
    kv_bits: float | None = typer.Option(None, "--kv-bits", help="Estimate: KV-cache bits (16, 8)."),
    concurrency: list[int] | None = typer.Option(
        None, "--concurrency", help="Estimate: concurrency levels (repeat; default 1..256)."
    ),
    private_usd_per_year: float | None = typer.Option(
        None, "--private-usd-per-year", help="Also price the fleet as a private deployment."
    ),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    spec_tokens: int = typer.Option(0, "--spec-tokens", help="Estimate: draft tokens per step K (0 = off)."),
    acceptance_length: float = typer.Option(1.0, "--acceptance-length",
                                            help="Estimate: tokens emitted per step with speculation, 1..K+1."),
    check_published: bool = typer.Option(False, "--check-published",
                                         help="Grade the planner on configs/published_runs.yaml (leave-one-out)."),
    published_file: Path | None = typer.Option(None, "--published-file", help="With --check-published: another file."),
    write_fit: bool = typer.Option(False, "--write-fit", help="With --check-published: write planner_fit.yaml."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    disagg: bool = typer.Option(False, "--disagg", help="Estimate: also search disaggregated prefill/decode "
                                "(xPyD pools on --disagg-gpus GPUs) and print its best point under --slo next to "
                                "the aggregated one; with --compare, per GPU."),
    disagg_gpus: int | None = typer.Option(None, "--disagg-gpus", help="With --disagg: GPUs of the whole xPyD "
                                           "deployment (default 2 x --count); its concurrencies are --concurrency "
                                           "x GPUs / --count (the same load per GPU)."),
    pools: str | None = typer.Option(None, "--pools", help="With --disagg: fix the layout, xPyD (e.g. 2P1D); "
                                     "default: search every layout that fits."),
    prefill_tp: int | None = typer.Option(None, "--prefill-tp", help="With --disagg: TP of a prefill replica "
                                          "(default: search)."),
    decode_tp: int | None = typer.Option(None, "--decode-tp", help="With --disagg: GPUs of a decode replica "
                                         "(default: search); --ep and --dp-attention apply to it."),
    figure: Path | None = typer.Option(None, "--figure", help="With --disagg: write a PNG of output tok/s per GPU "
                                       "vs interactivity, aggregated and disaggregated frontiers."),
) -> None:
    """Fleet sizing: GPUs, monthly cost and margin to serve --tokens-per-day at an SLO-feasible throughput.

    Throughput: --tok-s-per-gpu (given), --results (the best measured point under --slo) or, when
    neither is given, the analytical roofline estimate for --model/--gpu/--count/--quant.
    --check-published grades that estimate against published GPU runs instead (leave-one-out).
    """
    if check_published:
        _check_published(published_file, write_fit, json_out)
        return
    from bench.planner.answer import PlanQuestion, answer_plan

    opts.require_finite(tokens_per_day=tokens_per_day, usd_per_gpu_hour=usd_per_gpu_hour,
                        output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
                        tok_s_per_gpu=tok_s_per_gpu, isl=input_tokens, osl=output_tokens, cached_share=cached_share,
                        utilization=utilization, peak_to_average=peak_to_average, max_utilization=max_utilization,
                        kv_bits=kv_bits, private_usd_per_year=private_usd_per_year, usd_per_cny=usd_per_cny)
    dq = _disagg_question(disagg, model=model, gpu=gpu, quant=quant, count=count, ep=ep, kv_bits=kv_bits,
                          dp_attention=dp_attention, isl=input_tokens, osl=output_tokens, gpus=disagg_gpus,
                          pools=pools, prefill_tp=prefill_tp, decode_tp=decode_tp, concurrency=concurrency,
                          slo=slo, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                          refused={"--closed-form": closed_form, "--burst": burst, "--spec-tokens": spec_tokens,
                                   "--tokens-per-day": tokens_per_day is not None, "--results": results is not None,
                                   "--cached-share": cached_share,
                                   "--output-tok-s-per-gpu": output_tok_s_per_gpu is not None,
                                   "--total-tok-s-per-gpu": total_tok_s_per_gpu is not None},
                          other={"--disagg-gpus": disagg_gpus, "--pools": pools, "--prefill-tp": prefill_tp,
                                 "--decode-tp": decode_tp, "--figure": figure})
    a = answer_plan(PlanQuestion(
        tokens_per_day=tokens_per_day, model=model, gpu=gpu, count=count, quant=quant, tier=tier,
        usd_per_gpu_hour=usd_per_gpu_hour, output_tok_s_per_gpu=output_tok_s_per_gpu,
        total_tok_s_per_gpu=total_tok_s_per_gpu, tok_s_per_gpu=tok_s_per_gpu,
        results=(lambda: opts.load_points(results)) if results is not None else None, results_label=str(results),
        price=price, input_tokens=input_tokens, output_tokens=output_tokens, cached_share=cached_share,
        utilization=utilization, peak_to_average=peak_to_average, max_utilization=max_utilization,
        slo=opts.slo_option(slo), compare=compare, tp=tp, ep=ep, dp_attention=dp_attention, burst=burst,
        kv_bits=kv_bits, concurrency=concurrency, private_usd_per_year=private_usd_per_year, usd_per_cny=usd_per_cny,
        spec_tokens=spec_tokens, acceptance_length=acceptance_length,
        method="closed-form" if closed_form else "simulate", max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens))
    if dq is not None:
        _disagg(a.estimate, dq, price=price, usd_per_cny=usd_per_cny, compare=compare, json_out=json_out,
                figure=figure)
        opts.print_notes(a.tier_note)
        return
    if a.fleet is None:  # the estimate alone: nothing to size, or no point meets the SLO
        print_json({"estimate": a.estimate}) if json_out else _print_estimate(a.estimate)
        if a.error is not None:
            raise UserInputError(a.error)
        opts.print_notes(a.tier_note)
        return
    out = a.out
    if a.estimate is not None and not json_out:
        _print_estimate(a.estimate)
    if json_out:
        print_json(out)
        opts.print_notes(a.tier_note, a.tok_note)
        return
    print_table(f"Fleet for {tokens_per_day:.3g} tokens/day: peak-to-average {peak_to_average:g}, at most "
                f"{max_utilization:g} utilization at peak -> average U = {a.fleet.avg_utilization:.3g}; "
                "cost_usd_per_m_tokens counts input + output tokens", opts.pct([out["plan"]]), PLAN_COLUMNS)
    if "private_deployment" in out:
        print_table("As a private deployment (paid for all 8760 h; utilization does not enter)",
                    opts.pct([out["private_deployment"]]))
    opts.print_notes(a.tier_note, a.tok_note)


def _print_estimate(e: dict[str, Any]) -> None:
    """Tables of a plan estimate; every title says ESTIMATE so nobody mistakes it for a measurement."""
    how = "scheduler simulation over the roofline step model" if e.get("method") == "simulate" else \
        "analytical roofline, closed form"
    say(f"({how}, not measured): {e['model']} on {e['count']}x{e['gpu']} "
        f"{e['quant']} (tp {e['tp']}{', ep' if e['ep'] else ''}"
        f"{', dp-attention ' + str(e['dp_attention']) if e.get('dp_attention', 1) > 1 else ''}"
        f"{', burst' if e.get('burst') else ''}, {e['replicas']} replica(s), GEMMs at "
        f"{e['compute_precision']}), ISL {e['isl']} / OSL {e['osl']}; efficiency factors: {e['efficiency_source']}",
        prefix="ESTIMATE ", prefix_style="bold")
    say(e["error_band"], prefix="ERROR BAND ", prefix_style="bold")
    print_table("Memory fit per GPU (estimate)", [e["memory"]], [
        "weights_gib_per_gpu", "usable_gib_per_gpu", "kv_budget_gib_per_gpu", "kv_kib_per_token_per_gpu",
        "context_tokens", "max_concurrent_seqs", "fits"])
    for n in e["notes"]:
        say(f"note: {n}")
    sim = e.get("method") == "simulate"
    cols = ["concurrency", "batch_per_replica", "tpot_ms", *(["tpot_ms_p90"] if sim else []), "ttft_ms",
            *(["ttft_ms_p90", "ttft_ms_p99"] if sim else []), "interactivity_tok_s_user",
            "output_tok_s_per_gpu", "decode_bound", "meets_slo", "usd_per_m_output_tokens", "utilization"]
    if any("gross_margin" in r for r in e["curve"]):
        cols += ["revenue_usd_per_gpu_hour", "cost_usd_per_gpu_hour", "gross_margin"]
    rate = f"{e['tier']} ${e['usd_per_gpu_hour']:.3g}/GPU-h" if e["usd_per_gpu_hour"] else "no rate known"
    at_u = f"at U = {e['utilization']:g}"
    print_table(f"Throughput-latency curve (estimate; $ at {rate}, {at_u}: cost x 1/U; "
                "usd_per_m_output_tokens counts output tokens)", opts.pct(e["curve"]), cols)
    best = e["best_under_slo"]
    slo = ", ".join(f"{k}<={v:g}" for k, v in e["slo"].items()) or "none"
    kind = "simulated percentiles" if sim else "point estimate"
    say(f"best under SLO ({slo}, {kind}): concurrency {best['concurrency']}, "
        f"{best['output_tok_s_per_gpu']:.4g} output tok/s/GPU, TPOT {best['tpot_ms']:.4g} ms, "
        f"TTFT {best['ttft_ms']:.4g} ms (estimate)"
        if best else (f"no estimated point meets the SLO ({slo}, {kind})" if e["memory"].get("fits", True)
                      else "the model does not fit in GPU memory at this --count/--quant: no point to serve "
                           "(more GPUs, a smaller quantization or a larger GPU; relaxing --slo will not help)"))
    if e["cost_by_tier"]:
        print_table(f"$/M tokens by price tier at the best point (estimate, {at_u}; usd_per_m_tokens counts "
                    "input + output tokens)", opts.pct(e["cost_by_tier"]),
                    [c for c in e["cost_by_tier"][0] if c != "source"])
    if e.get("compare"):
        cols = ["gpu", "quant", "fits", "max_concurrent_seqs", "best_concurrency", "tpot_ms",
                "output_tok_s_per_gpu", "tier", "usd_per_m_output_tokens", "utilization"]
        cols += ["gross_margin"] if any("gross_margin" in r for r in e["compare"]) else []
        print_table(f"GPU x quantization (estimate; best point under the SLO; $ {at_u}; all fields: --json)",
                    opts.pct(e["compare"]), cols)


def _disagg_question(on: bool, *, model: str | None, gpu: str | None, quant: str | None, count: int, ep: bool,
                     kv_bits: float | None, dp_attention: int, isl: float, osl: float, gpus: int | None,
                     pools: str | None, prefill_tp: int | None, decode_tp: int | None,
                     concurrency: list[int] | None, slo: str | None, max_num_seqs: int | None,
                     max_num_batched_tokens: int | None, refused: dict[str, Any], other: dict[str, Any]) -> Any:
    """`--disagg`'s question, every input checked before anything is simulated (one line, exit 2)."""
    if not on:
        given = [k for k, v in other.items() if v is not None]
        if given:
            raise UserInputError(f"{given[0]}: only with --disagg")
        return None
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise UserInputError(f"{bad[0]}: not with --disagg (it compares simulated aggregated and disaggregated "
                             "serving at the SLO; no fleet, measured throughput, burst, speculation or prefix cache)")
    if model is None or gpu is None or quant is None:
        raise UserInputError("--disagg: needs --model, --gpu and --quant")
    from bench.planner import disagg as dg
    from bench.planner.estimate import DEFAULT_CONCURRENCIES

    n = 2 * count if gpus is None else gpus
    if n < 2:
        raise UserInputError(f"--disagg-gpus: at least 2 (one prefill and one decode GPU; got {n})")
    limits = {t.column: t.limit_ms for t in opts.slo_option(slo).terms}
    q = dg.DisaggQuestion(
        base=dg.base_deployment(model, gpu, quant, ep=ep, kv_bits=kv_bits), gpus=n, isl=int(isl), osl=int(osl),
        # the same load per GPU as the aggregated curve: each concurrency is per --count GPUs
        concurrencies=tuple(sorted({max(1, c * n // count) for c in (concurrency or DEFAULT_CONCURRENCIES)})),
        slo=limits,
        pools=dg.parse_pools(pools) if pools is not None else None, prefill_tp=prefill_tp, decode_tp=decode_tp,
        decode_dp_attention=dp_attention, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    dg.layouts(q)  # the layout checks (divides the GPUs, TP within the scale-up domain, fits) before any run
    return q


DISAGG_COLUMNS = ["layout", "gpus", "link_kind", "kv_transfer_ms_isl", "decode_kv_blocks", "concurrency",
                  "ttft_ms_p90", "tpot_ms_p90", "output_tok_s_per_gpu", "usd_per_m_output_tokens", "gross_margin"]


def _disagg(est: dict[str, Any], q: Any, *, price: str | None, usd_per_cny: float | None, compare: bool,
            json_out: bool, figure: Path | None) -> None:
    """`plan --disagg`: the aggregated estimate, every xPyD layout's best point, and the two side by side."""
    from bench.config.prices import load_price_book
    from bench.planner import disagg as dg
    from bench.planner.estimate import COMPARE_GPUS

    entry = load_price_book().get(price) if price is not None else None
    out = dg.plan_disagg(est, q, price=entry, usd_per_cny=usd_per_cny)
    if compare:
        out["compare"] = dg.compare_disagg(est, q, COMPARE_GPUS, price=entry, usd_per_cny=usd_per_cny)
    if figure is not None:
        out["figure"] = str(_disagg_figure(est, out, figure))
    if json_out:
        print_json({"estimate": est, "disagg": out})
        return
    _print_estimate(est)
    rows = [{**(r["best"] or {}), **r, "link_kind": r["link"]["kind"]} for r in out["layouts"]]
    at = f"$ at {out['tier']} ${out['usd_per_gpu_hour'] or float('nan'):.3g}/GPU-h, U = {out['utilization']:g}"
    print_table(f"Disaggregated prefill/decode on {q.gpus} x {out['gpu']}: best point per layout under the SLO "
                f"(estimate; {at})", opts.pct(rows), DISAGG_COLUMNS)
    for n in out["notes"]:
        say(f"note: {n}")
    print_table(f"Aggregated vs disaggregated: best output tok/s per GPU under the SLO (estimate; {at})",
                opts.pct(out["comparison"]), ["mode", "config", "gpus", "concurrency", "ttft_ms_p90", "tpot_ms_p90",
                                              "output_tok_s_per_gpu", "usd_per_m_output_tokens", "gross_margin"])
    if compare:
        print_table(f"GPUs compared at {out['quant']}: aggregated vs disaggregated (estimate; U = "
                    f"{out['utilization']:g})", opts.pct(out["compare"]),
                    ["gpu", "mode", "config", "gpus", "output_tok_s_per_gpu", "tier", "usd_per_m_output_tokens",
                     "gross_margin"])
    if figure is not None:
        say(f"wrote {out['figure']}")


def _disagg_figure(est: dict[str, Any], out: dict[str, Any], path: Path) -> Path:
    """Output tok/s per GPU vs interactivity: the aggregated curve and every xPyD layout's points, one
    frontier each (the report's figure (a), bench.report.figures.fig_throughput)."""
    import pandas as pd

    from bench.report.figures import fig_throughput

    rows = [{"series": f"aggregated TP{est['tp']}", "load_short": f"c{p['concurrency']}", **p}
            for p in est["curve"]]
    rows += [{"series": f"disaggregated ({out['gpus']} GPUs)",
              "load_short": f"{r['prefill_replicas']}P{r['decode_replicas']}D c{p['concurrency']}", **p}
             for r in out["layouts"] for p in r["curve"]]
    df = pd.DataFrame([{k: r[k] for k in ("series", "load_short", "interactivity_tok_s_user",
                                          "output_tok_s_per_gpu")} | {"status": "ok"} for r in rows])
    return fig_throughput(df, path)


CHECK_COLUMNS = ["id", "engine", "gpu", "spec", "mode", "weight", "predicted_output_tok_s", "published_output_tok_s",
                 "ratio_output_tok_s", "predicted_tpot_ms", "published_tpot_ms", "ratio_tpot_ms", "sim_ttft_ms",
                 "published_ttft_ms", "sim_ratio_ttft_ms", "status"]


def _check_published(path: Path | None, write: bool, json_out: bool) -> None:
    """`plan --check-published`: predicted vs published, leave-one-out (bench.planner.fit)."""
    from bench.planner import fit

    res = fit.check_published(path)
    if write:
        res["written"] = str(fit.write_fit(res))
    if json_out:
        print_json(res)
        return
    print_table("Planner vs published GPU runs (each graded row predicted by a fit WITHOUT it)", res["rows"],
                CHECK_COLUMNS)
    for k, b in res["band"].items():
        say(f"{k}: median ratio {b['median_ratio']:.3g}, worst {b['worst_ratio']:.3g} "
            f"(typical x{b['typical_factor']:.3g}, worst x{b['worst_factor']:.3g}) over {b['n_points']} points")
    for k, b in res.get("simulated_band", {}).items():
        say(f"{k} (scheduler simulation): median ratio {b['median_ratio']:.3g}, worst {b['worst_ratio']:.3g} "
            f"(typical x{b['typical_factor']:.3g}, worst x{b['worst_factor']:.3g}) over {b['n_points']} points")
    say(f"within 1.5x on both: {res['within_1_5x']} of {res['graded']} graded points (closed form; TTFT from the "
        "scheduler simulation, graded beside)")
    say("global parameters (fit on all weighted points): "
        + ", ".join(f"{k}={v:.4g}" for k, v in res["params"].items()))
    if write:
        say(f"wrote {res['written']}")


def calibrate(
    results: list[Path] = typer.Argument(..., help="Run dir(s) with measured points."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fit and print; do not write configs/roofline.yaml."),
    closed_form: bool = typer.Option(False, "--closed-form", help="Fit the closed-form serving formulas only "
                                     "(skip the refinement against the scheduler simulation)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fit roofline efficiency factors per GPU/quantization from measured runs (configs/roofline.yaml).

    The closed-form fit is refined against the scheduler simulation (what `plan` and the virtual engine
    run) on each point's TTFT p50, TPOT p50 and output tok/s, unless --closed-form."""
    import pandas as pd

    from bench.planner import calibrate as roofline

    df = pd.concat([opts.load_points(r) for r in results], ignore_index=True)
    fits = roofline.calibrate(df, simulate=not closed_form)
    if not dry_run:
        roofline.save_calibration(fits, source=", ".join(str(r) for r in results))
    rows = [{**f.__dict__, "written": not dry_run} for f in fits]
    if json_out:
        print_json(rows)
    else:
        print_table("Calibrated roofline factors", rows)
