"""Imported result files -> one run folder, written with the ordinary `RunStore`.

Why a run folder like any other: `cost`, `margin --results`, `report`, `plan --results`, `calibrate` and the
catalog read `results/<run_id>/` (rows/, points.parquet, env.json); an imported run is one more such folder,
told apart by its rows' `source: imported` and its `import.json` (what was imported, from where, with which
hardware and price). It has no sweep.yaml: no sweep ran.

All or nothing: every file is read and mapped before anything is written, the folder is written under a
temporary name in the results root and renamed into place at the end, so a bad file or a crash leaves no
half-imported run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import __version__
from bench.atomic import atomic_write_text
from bench.config import quant
from bench.config.base import StrictModel, stable_hash
from bench.config.sweep import HardwareRef
from bench.errors import UserInputError
from bench.measure.metrics import interactivity_tok_s_user, per_gpu_columns
from bench.sweep.imports import ReadFile
from bench.sweep.pricing import Pricing
from bench.sweep.store import RunStore

IMPORT_FILE = "import.json"


class ImportSidecar(StrictModel):
    """A small YAML beside the results: the hardware and price "as for a run" (the sweep's `hardware:`
    block) and what the files do not say (model, quantization, engine). Flags override it."""

    hardware: HardwareRef | None = None
    model: str | None = None
    quantization: str | None = None
    engine: str | None = None


@dataclass
class ImportPlan:
    """Everything the import needs beyond the files; `usd_per_gpu_hour` is resolved by the caller (econ)."""

    hardware: HardwareRef
    usd_per_gpu_hour: float | None
    model: str | None = None
    quantization: str | None = None
    engine: str | None = None
    notes: list[str] = field(default_factory=list)


def _gpu_count(plan: ImportPlan, point: dict[str, Any]) -> int:
    """GPUs behind a point's throughput: the flag, else what the file says, else its tensor parallelism, else 1."""
    return plan.hardware.count or point.get("gpu_count") or point.get("tensor_parallel_size") or 1


def build_rows(files: Sequence[ReadFile], plan: ImportPlan, run_id: str, pricing: Pricing) -> list[dict[str, Any]]:
    """The schema rows of every point of every file (bench.sweep.rows), provenance and price added."""
    q = quant.get(plan.quantization).name if plan.quantization else None  # "none" = unquantized, as a run
    device = "cpu" if plan.hardware.gpu.startswith("cpu") else "gpu"
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for f in files:
        if f.sha256 in seen:  # the same points twice would share point ids and count once in every table
            raise UserInputError(f"{f.path}: the same file (SHA-256 {f.sha256[:12]}) is given twice "
                                 f"(also {seen[f.sha256]})")
        seen[f.sha256] = f.path
        for i, point in enumerate(f.parsed.points):
            row = dict(point)
            gpus = _gpu_count(plan, point)
            failed = point.get("failed")
            row.update({
                "run_id": run_id, "point_id": stable_hash({"sha256": f.sha256, "point": i}, length=16),
                "point_index": len(rows), "status": "partial" if failed else "ok",
                "error": f"{failed} of {point.get('num_requests')} requests failed (as the tool reported)"
                if failed else None,
                "source": "imported", "import_tool": f.parsed.tool, "import_tool_version": f.parsed.tool_version,
                "import_file_sha256": f.sha256, "output_token_counter": f.parsed.output_token_counter,
                "device": device, "gpu_type": plan.hardware.gpu, "gpu_count": gpus,
                "hardware_tier": "override" if plan.hardware.usd_per_gpu_hour is not None else plan.hardware.tier,
                "usd_per_gpu_hour": plan.usd_per_gpu_hour, "workload": f.path.name,
            })
            if plan.model:
                row["model"] = plan.model
            if q is not None:
                row["quantization"] = q
            if plan.engine:
                row["engine"] = plan.engine
            row.update(per_gpu_columns(row, gpus))
            row["interactivity_tok_s_user"] = interactivity_tok_s_user(row.get("tpot_ms_p50"))
            row.update(pricing.cost_columns(row))
            rows.append(row)
    return rows


def _manifest(files: Sequence[ReadFile], plan: ImportPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "maas_bench": __version__,
        "files": [{"path": str(f.path.resolve()), "format": f.format, "tool": f.parsed.tool,
                   "tool_version": f.parsed.tool_version, "sha256": f.sha256, "points": len(f.parsed.points),
                   "output_token_counter": f.parsed.output_token_counter, "notes": f.parsed.notes} for f in files],
        "hardware": plan.hardware.model_dump(), "usd_per_gpu_hour": plan.usd_per_gpu_hour,
        "model": plan.model, "quantization": plan.quantization, "engine": plan.engine, "notes": plan.notes,
        "points": len(rows),
    }


def _env(files: Sequence[ReadFile], plan: ImportPlan) -> dict[str, Any]:
    """env.json of an imported run: what produced the numbers (the tools), not this machine."""
    return {"source": "imported", "maas_bench": __version__,
            "tools": sorted({f"{f.parsed.tool}=={f.parsed.tool_version or '?'}" for f in files}),
            "device": "cpu" if plan.hardware.gpu.startswith("cpu") else "gpu", "gpu_name": plan.hardware.gpu,
            "gpu_count": plan.hardware.count}


def default_run_name(files: Sequence[ReadFile]) -> str:
    tools = "-".join(sorted({f.parsed.tool for f in files}))
    return f"import-{tools}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def write_import(files: Sequence[ReadFile], plan: ImportPlan, out_root: Path, pricing: Pricing,
                 name: str | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Write the run folder `out_root/<name>` (a -2, -3 suffix when taken); returns it and its rows."""
    base = name or default_run_name(files)
    n = 1
    while (out_root / (base if n == 1 else f"{base}-{n}")).exists():
        n += 1
    final = out_root / (base if n == 1 else f"{base}-{n}")
    rows = build_rows(files, plan, final.name, pricing)  # every row checked before any write
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_root))
    try:
        store = RunStore(tmp)
        (tmp / "rows").mkdir()
        for row in rows:
            store.write_point(row)
        store.rebuild_table()  # points.parquet once, from rows/ (the source of truth), as a run does at its end
        atomic_write_text(tmp / "env.json", json.dumps(_env(files, plan), indent=2))
        atomic_write_text(tmp / IMPORT_FILE, json.dumps(_manifest(files, plan, rows), indent=2))
        try:
            os.rename(tmp, final)  # fails on a non-empty directory of that name that appeared meanwhile
        except OSError as e:
            raise UserInputError(f"{final}: could not move the imported run into place ({e.strerror or e}); "
                                 "run the import again") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, rows
