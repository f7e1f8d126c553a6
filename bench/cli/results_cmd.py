"""`maas-bench import` (other tools' result files -> a run folder) and `maas-bench export` (a run -> llm-d
Benchmark Reports). Argument plumbing and printing only: reading, mapping and writing are
bench.sweep.imports; the $/GPU-hour and the cost columns come from bench.econ, as for a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bench.cli import money_options as opts
from bench.cli.output import print_json, print_table, say
from bench.errors import UserInputError

SUMMARY_COLUMNS = ["point_index", "import_tool", "model", "concurrency", "output_tok_s_per_gpu", "ttft_ms_p50",
                   "tpot_ms_p50", "usd_per_m_output"]


def import_results(
    files: list[Path] = typer.Argument(..., help="Result files: vllm bench serve JSON, GuideLLM benchmarks.json, "
                                                 "AIPerf profile_export_aiperf.json, InferenceX agg_*.json, "
                                                 "llm-d Benchmark Report (JSON/YAML)."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the content), vllm, guidellm, aiperf, inferencex "
                                                     "or llm-d."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml the results ran on."),
    gpu_count: int | None = typer.Option(None, "--gpu-count", min=1,
                                         help="GPUs behind the throughput (default: the file's, else its TP, else 1)."),
    tier: str | None = typer.Option(None, "--tier", help="Price tier of the GPU-hour (default on-demand, as a run)."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the tier price."),
    model: str | None = typer.Option(None, "--model", help="Model id for the rows (default: the file's)."),
    quantization: str | None = typer.Option(None, "--quantization", help="Quantization (registry name) of the rows."),
    engine: str | None = typer.Option(None, "--engine", help="Engine label for the rows (default: the file's)."),
    sidecar: Path | None = typer.Option(None, "--sidecar", help="YAML with hardware: {gpu, count, tier, "
                                        "usd_per_gpu_hour} and model/quantization/engine; flags override it."),
    out: Path = typer.Option(Path("results"), "--out", help="Results root; the run is written to OUT/<name>/."),
    name: str | None = typer.Option(None, "--name", help="Run folder name (default import-<tools>-<UTC time>)."),
    json_out: bool = typer.Option(False, "--json", help="Print the imported rows' summary as JSON."),
) -> None:
    """Price anyone's benchmark: import result files of other tools as a maas-bench run.

    The format is detected from each file's content. Fields a format lacks stay empty; rows carry
    source=imported, the tool, its version and the file's SHA-256. Nothing is written unless every
    file reads cleanly.
    """
    from pydantic import ValidationError

    from bench.config.base import format_validation_error, read_yaml
    from bench.config.hardware import load_hardware
    from bench.config.sweep import HardwareRef
    from bench.econ import bounds
    from bench.econ.cost import resolve_usd_per_gpu_hour
    from bench.econ.row_cost import ROW_PRICING
    from bench.sweep import imports
    from bench.sweep.imports.write import ImportPlan, ImportSidecar, write_import

    opts.require_finite(usd_per_gpu_hour=usd_per_gpu_hour)
    bounds.check_all(usd_per_gpu_hour=usd_per_gpu_hour)
    side = ImportSidecar()
    if sidecar is not None:
        try:
            side = ImportSidecar.model_validate(read_yaml(sidecar) or {})
        except ValidationError as e:
            raise UserInputError(format_validation_error(sidecar, e)) from None
    hw = side.hardware.model_dump() if side.hardware else {}
    hw.update({k: v for k, v in (("gpu", gpu), ("count", gpu_count), ("tier", tier),
                                 ("usd_per_gpu_hour", usd_per_gpu_hour)) if v is not None})
    if not hw.get("gpu"):
        raise UserInputError("import: give --gpu (or hardware.gpu in --sidecar): the GPU the results ran on")
    hardware = HardwareRef.model_validate(hw)
    rate = hardware.usd_per_gpu_hour if hardware.usd_per_gpu_hour is not None else \
        resolve_usd_per_gpu_hour(hardware.gpu, hardware.tier, load_hardware())
    read = [imports.read(f, fmt) for f in files]  # every file checked before anything is written
    plan = ImportPlan(hardware, rate, model or side.model, quantization or side.quantization, engine or side.engine)
    run_dir, rows = write_import(read, plan, out, ROW_PRICING, name)
    summary = [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in rows]
    if json_out:
        print_json({"run_dir": str(run_dir), "points": summary})
    else:
        print_table(f"Imported {len(rows)} point(s) into {run_dir}", summary, SUMMARY_COLUMNS)
    for f in read:
        for note in f.parsed.notes:
            say(f"{f.path.name}: {note}", err=True, prefix="note: ")


# `import` is a Python keyword: the function keeps a usable name and the command is called `import`
# (typer names a command after its callback's __name__ when app.py registers it without a name).
import_results.__name__ = "import"


def export(
    run_dir: Path = typer.Argument(..., help="A run folder (results/<run_id>/)."),
    fmt: str = typer.Option("llm-d", "--format", help="Export format: llm-d (Benchmark Report v0.2.1)."),
    out: Path = typer.Option(..., "--out", help="A directory (one <point_id>.json per point), or a .json file "
                                                "for a run of one point."),
) -> None:
    """Export every point of a run as an llm-d Benchmark Report v0.2.1 (one report per point)."""
    from bench.atomic import atomic_write_text
    from bench.report.data import load_run
    from bench.sweep.imports.llmd_export import report

    if fmt != "llm-d":
        raise UserInputError(f"export: unknown --format {fmt!r}; known: llm-d")
    run, df = load_run(run_dir)
    rows = df.to_dict(orient="records")
    if not rows:
        raise UserInputError(f"{run_dir}: the run has no points to export")
    docs = [(str(r["point_id"]), report(r, run.env)) for r in rows]
    if out.suffix.lower() == ".json":
        if len(docs) != 1:
            raise UserInputError(f"--out {out}: the run has {len(docs)} points; give a directory (one file each)")
        targets = [(out, docs[0][1])]
    else:
        targets = [(out / f"{pid}.json", doc) for pid, doc in docs]
    for path, doc in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    say(f"wrote {len(targets)} llm-d report(s) to {out}")
