"""Commands that measure: run (a sweep), tune (adaptive search under an SLO), sim (the simulated
server), models (the catalog). Argument plumbing and printing only; the logic is in bench.sweep,
bench.sim and bench.config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.cli.output import err_console, print_json, print_table, say
from bench.config.sweep import load_sweep
from bench.engines import registry  # noqa: F401 - registers every engine kind before a sweep file is read
from bench.errors import UserInputError
from bench.planner import virtual  # noqa: F401 - registers the virtual engine kind (it needs the planner)
from bench.sweep.store import check_output_dir


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List catalog models: attention type, total/active parameters (MTP apart) and KV-cache bytes per token."""
    from bench.config.catalog import load_models

    rows = [m.summary() for m in load_models().values()]
    if json_out:
        print_json(rows)
    else:
        print_table("Model catalog (params in billions; KV bytes per token at BF16, whole replica)", rows,
                    MODELS_TABLE_COLUMNS)


MODELS_TABLE_COLUMNS = ["model", "attention", "twin_of", "total_params_b", "published_total_b", "active_params_b",
                        "published_active_b", "mtp_params_b", "kv_bytes_per_token_bf16", "max_context"]


SUMMARY_COLUMNS = ["status", "model", "dtype", "quantization", "concurrency", "request_rate", "completed",
                   "output_tok_s", "ttft_ms_p50", "tpot_ms_p50", "e2el_ms_p99", "usd_per_m_output", "error"]


def run(
    config: Path = typer.Argument(..., help="Sweep YAML, e.g. configs/sweeps/smoke.yaml."),
    out: Path = typer.Option(Path("results"), "--out", help="Directory that receives results/<run_id>/."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run dir; finished points are skipped."),
    executor: str = typer.Option("local", "--executor", help="local (groups one after another) | ray (one Ray "
                                 "task per server group, num_gpus = tensor-parallel size)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address for --executor ray, e.g. "
                                       "auto or ray://head:10001 (default: start a local Ray instance)."),
    json_out: bool = typer.Option(False, "--json", help="Print the points as JSON instead of a table."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="With --resume: keep failed/partial points' "
                                     "rows instead of measuring those points again."),
    allow_large_sweep: bool = typer.Option(False, "--allow-large-sweep", help="Run a sweep of more points than "
                                           "the point budget (2,000; docs/reliability.md)."),
) -> None:
    """Measure: run a sweep on its engine and write results/<run_id>/ (exit 1 if any point failed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from bench.econ.row_cost import ROW_PRICING
    from bench.sweep.prepare import check_executor, prepare
    from bench.sweep.run import check_point_budget, run_sweep

    if address is not None and executor != "ray":
        raise UserInputError("--address is only used with --executor ray")
    check_executor(executor)  # an argument error comes before the sweep file's errors
    if keep_failed and resume is None:
        raise UserInputError("--keep-failed is only used with --resume")
    if resume is None:
        check_output_dir(out)  # before anything runs or is written
    sweep = load_sweep(config)
    n_points = check_point_budget(sweep, allow_large_sweep)  # before the points are expanded and checked
    # every pre-start check, once: before the progress bar draws, so an error is one line
    plan = prepare(sweep, resume, executor, ROW_PRICING)
    say(f"{sweep.name}: {n_points} point(s)", err=True)
    # markup=False: descriptions carry model names and paths from data
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False, disable=json_out) as bar:
        task = bar.add_task("starting", total=None)

        def on_event(e: dict[str, Any]) -> None:
            kind = e["type"]
            if kind == "start":
                bar.update(task, total=e["requests"], description=f"{e['points']} points -> {e['run_dir']}")
                if e["skipped"]:
                    bar.console.print(Text(f"resume: skipping {e['skipped']} finished point(s)"))
            elif kind == "server_starting":
                s = e["server"]
                bar.update(task, description=f"starting {s['model']} {s['dtype']} q={s['quantization']}")
            elif kind in ("config_changed", "note", "warning"):
                bar.console.print(Text(str(e["message"]), style="yellow"))
            elif kind == "server_failed":
                bar.console.print(Text(str(e["error"]), style="red"))
            elif kind == "point_start":
                lp = e["point"].load
                load = f"c={lp.concurrency}" if lp.concurrency else f"rate={lp.request_rate}/s"
                bar.update(task, description=f"point {e['index']}: {load}")
            elif kind == "request_done":
                bar.advance(task)
            elif kind == "point_done" and e.get("skipped_requests"):
                bar.advance(task, e["skipped_requests"])

        summary = run_sweep(plan, out_root=out, progress=on_event, ray_address=address, keep_failed=keep_failed)
    if json_out:
        print_json(summary.rows)
    else:
        print_table(f"{sweep.name}: {summary.run_dir}", summary.rows, SUMMARY_COLUMNS)
        eff = summary.sweep_efficiency
        say(f"{summary.points_run} point(s) run, {summary.points_skipped} skipped, "
            f"{summary.points_failed} failed; {summary.server_starts} server start(s); "
            f"wall {summary.wall_s:.1f} s; sweep efficiency {eff:.2f}" if eff is not None else "")
        if summary.timing:
            from bench.sweep.timing import timing_line

            say(timing_line(summary.timing) + f" (by group: {summary.run_dir}/timing.json)")
    if summary.points_failed:
        raise typer.Exit(1)


def sim(
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0 = any free port)."),
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
    virtual_gpu: str | None = typer.Option(
        None, "--virtual", help="Time every token by the scheduler simulation of a GPU not at hand, in real time: "
        "GPU[xCOUNT]:MODEL:QUANT, e.g. h200x8:glm-5.2:fp8 (COUNT GPUs in tensor parallel; the planner's "
        "factors). Replaces --ttft-ms/--itl-ms; what you measure is an estimate, not a GPU."),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", min=1, help="--virtual: vLLM's max_num_seqs "
                                            "(default: vLLM's for the GPU)."),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", min=1,
                                                      help="--virtual: the step's token budget (default: vLLM's)."),
    max_model_len: int = typer.Option(16384, "--max-model-len", min=2, help="--virtual: longest prompt + output."),
    ep: bool = typer.Option(False, "--ep", help="--virtual: expert parallel across the GPUs."),
) -> None:
    """Run the simulated OpenAI-compatible streaming server until Ctrl-C (for tests and dry runs)."""
    from bench.sim import serve_forever, sim_config_from_options

    pacer = None
    if virtual_gpu is not None:
        from bench.planner.pacer import RealTimeEngines, parse_virtual

        pacer = RealTimeEngines(parse_virtual(virtual_gpu, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                              max_num_batched_tokens=max_num_batched_tokens, ep=ep))

    cfg = sim_config_from_options(
        model=model, ttft_ms=ttft_ms, itl_ms=itl_ms, tokens_per_chunk=tokens_per_chunk,
        output_tokens=output_tokens, max_concurrent_streams=max_concurrency, error_rate=error_rate,
        cut_rate=cut_rate, jitter_ms=jitter_ms, seed=seed, usage_mode=usage_mode,
        usage_offset_tokens=usage_offset, ping=ping, spin_ms=spin_ms,
    )

    def ready(url: str) -> None:
        say(f"simulated server listening on {url}  (OpenAI API under {url}/v1; Ctrl-C stops)")
        if pacer is not None:
            e = pacer.setup.engine
            say(f"virtual {virtual_gpu}: max_num_seqs {e.max_num_seqs}, max_num_batched_tokens "
                f"{e.max_num_batched_tokens}, max_model_len {pacer.setup.max_model_len}; estimate, not measured "
                "(the scheduler simulation over the planner's step model)")

    try:
        serve_forever(cfg, port=port, on_ready=ready, pacer=pacer)
    except KeyboardInterrupt:
        say("simulated server stopped")
    except OSError as e:
        raise UserInputError(f"--port {port}: cannot listen on 127.0.0.1 ({e.strerror or e})") from None


TUNE_COLUMNS = ["status", "dtype", "quantization", "max_num_seqs", "workload", "concurrency", "request_rate"]


def tune(
    config: Path = typer.Argument(..., help="Sweep YAML; its load list is the grid the search bisects."),
    slo: str = typer.Option(..., "--slo", help="Aggregate SLO 'metric[_pNN]<=ms,...' (default p90), e.g. "
                            "'ttft_ms_p99<=2000,tpot_ms_p50<=50'."),
    objective: str = typer.Option("usd_per_m_output", "--objective",
                                  help="usd_per_m_output | usd_per_m_total (min) or a throughput column (max)."),
    verify: bool = typer.Option(False, "--verify", help="Also measure the rest of the grid and report whether "
                                "the search found the grid's best."),
    out: Path = typer.Option(Path("results"), "--out", help="Directory that receives results/<run_id>/."),
    resume: Path | None = typer.Option(None, "--resume", help="Reuse the points already measured in this run dir."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Measure adaptively: the best config meeting an SLO, bisecting each load ladder toward its SLO knee."""
    from bench.config.slo import parse_slo
    from bench.econ.row_cost import ROW_PRICING
    from bench.sweep.prepare import prepare
    from bench.sweep.tune import check_objective, feasible, run_tune

    constraints = parse_slo(slo)
    check_objective(objective)
    if resume is None:
        check_output_dir(out)
    sweep = load_sweep(config)
    plan = prepare(sweep, resume, "local", ROW_PRICING)  # the same checks as `run`

    def on_event(e: dict[str, Any]) -> None:
        if json_out:
            return
        if e["type"] == "point_done":
            r = e["row"]
            load = f"c={r['concurrency']}" if r.get("concurrency") else f"rate={r.get('request_rate')}/s"
            ok = "meets SLO" if feasible(r, constraints) else "misses SLO"
            say(f"  {r.get('quantization')} {r.get('dtype')} {r.get('workload')} {load}: {r['status']}, {ok}",
                err=True)
        elif e["type"] == "server_failed":
            say(str(e["error"]), style="red", err=True)

    result = run_tune(plan, constraints, objective, out_root=out, verify=verify, progress=on_event)
    if json_out:
        print_json(result.to_dict())
        return
    metrics = list(dict.fromkeys(t.column for t in constraints.terms))
    rows = [{**r, "meets_slo": feasible(r, constraints)} for r in result.rows]
    print_table(f"tune {sweep.name}: {result.run_dir}", rows, TUNE_COLUMNS + metrics + [objective, "meets_slo"])
    print_table("Knee per ladder (highest load meeting the SLO)", [lad.describe() for lad in result.ladders],
                ["quantization", "dtype", "max_num_seqs", "workload", "load_kind", "grid", "measured", "knee"])
    slo_text = constraints.describe()
    if result.best is None:
        say(f"no measured point meets the SLO ({slo_text})")
    else:
        b = result.best
        load = f"concurrency {b['concurrency']}" if b.get("concurrency") else f"rate {b.get('request_rate')}/s"
        say(f"best under SLO ({slo_text}): {b['model']} {b['dtype']} q={b['quantization']} "
            f"max_num_seqs={b['max_num_seqs']} tp={b['tensor_parallel_size']} {b['workload']} {load}: "
            f"{objective} = {b[objective]:.4g}")
    found = {None: "not verified (use --verify)", True: "yes", False: "no"}[result.found_grid_best]
    say(f"search measured {result.points_measured} of {result.grid_size} grid points"
        + (f" (+{result.verify_measured} to verify)" if result.verify_measured else "")
        + f"; found the grid's best: {found}")
