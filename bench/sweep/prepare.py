"""Everything a run checks and computes before a run dir or a server exists, done once: `prepare`.

Why one place: the checks used to live in four (load_sweep, the CLI, run_sweep, open_run), so some ran
twice, a trace file was parsed three times and the server specs were expanded five to seven times per
run, while `tune` skipped three checks that `run` made. `run`, `tune`, the Ray executor and the CLI all
take the `RunPlan` this returns. The config-level checks (fields, lengths from the config, model names,
price tier) stay in `load_sweep`; engine-specific ones (the installed vLLM's features) are the engine
class's `preflight` hook, so this module imports no vLLM-only code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.catalog import load_models, uncataloged_note
from bench.config.hardware import load_hardware
from bench.config.sweep import LoadPoint, Point, ServerSpec, Sweep, WorkloadSpec, max_request_tokens
from bench.engines.base import Engine
from bench.engines.modeldir import check_model_dir_name
from bench.engines.registry import engine_class
from bench.errors import UserInputError
from bench.measure.workloads import check_workload_files
from bench.sweep import envinfo
from bench.sweep.pricing import UNPRICED, Pricing
from bench.sweep.store import RunStore, check_resume_target

EXECUTORS = ("local", "ray")

# Bounds for what no server states (an `openai` endpoint's context, a trace's rows, any length field): past them
# the sweep is refused before anything starts. The longest published context window is 10M tokens (Llama 4
# Scout, Meta AI blog "The Llama 4 herd", 2025-04-05); `input_len: 1e9` used to build its prompt for minutes.
MAX_REQUEST_TOKENS = 10_000_000
# Longest a point may take to send its requests at its request_rate (ramp_s + (warm-up + measured requests) /
# request_rate + duration_s): `request_rate: 1e-9` was a point that never ended. A day is far past any
# benchmark point (a closed-loop point is bounded by the server instead).
MAX_POINT_SEND_S = 86_400.0
# The length fields of a workload, bounded by MAX_REQUEST_TOKENS whatever the kind (an unused field included:
# a mooncake `block_tokens` of 1e9 would build a 1e9-word block).
LENGTH_FIELDS = ("input_len", "output_len", "prefix_len", "block_tokens", "system_prompt_len")


@dataclass
class RunPlan:
    """A sweep checked and expanded once: what run_sweep, run_tune and the Ray executor work from."""

    sweep: Sweep
    specs: list[ServerSpec]
    points: list[Point]
    engine: type[Engine]
    rate: float | None  # $/GPU-hour written into every row (from `pricing`)
    pricing: Pricing = UNPRICED
    resume: Path | None = None
    executor: str = "local"
    notes: list[str] = field(default_factory=list)  # e.g. a model that is not in the catalog
    workload_files: dict[str, Any] = field(default_factory=dict)  # workload name -> its parsed input file


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise UserInputError(f"--executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    return executor


def prepare(sweep: Sweep, resume: Path | None = None, executor: str = "local",
            pricing: Pricing | None = None) -> RunPlan:
    """Check and expand `sweep` for a run; every input file is read once and every check made once.

    Raises UserInputError (one line) for: an unknown executor, a --resume dir that is not a run dir, is in
    use by another run (its lock is held) or holds another sweep,
    a missing or malformed trace file or one with a request longer than max_model_len, a length above
    MAX_REQUEST_TOKENS, a rate point that would send for more than MAX_POINT_SEND_S, an unusable
    engine.ca_file, a feature the
    engine lacks (the engine class's `preflight`), GPUs this machine lacks (local executor, an engine
    on local GPUs), an unknown GPU or price tier.
    """
    check_executor(executor)
    if resume is not None and not (Path(resume) / "sweep.yaml").is_file():
        raise UserInputError(f"--resume: {resume} is not a maas-bench run directory (no sweep.yaml)")
    if resume is not None:  # before the progress bar draws; open_run takes the lock for real
        RunStore(Path(resume)).check_not_locked()
        check_resume_target(Path(resume), sweep.model_dump(mode="json"))
    pricing = pricing or UNPRICED
    specs = sweep.server_specs()
    points = sweep.points(specs)
    check_ca_file(sweep.engine.ca_file)
    for model in sorted({s.model for s in specs} & set(load_models())):  # a twin is written under the cache
        check_model_dir_name(model)
    files: dict[str, Any] = {}
    for w in sweep.workloads:  # a bad row fails here (exit 2), not after a server started
        check_workload_bounds(w)
        files[w.name] = data = check_workload_files(w)
        need = None if data is None else _file_max_tokens(w.kind, data)
        if need is None:
            continue
        if need > MAX_REQUEST_TOKENS:
            raise UserInputError(f"workload {w.name!r}: trace {w.trace_path} has a request of {need:,} tokens "
                                 f"(input + output), above the {MAX_REQUEST_TOKENS:,} of MAX_REQUEST_TOKENS")
        for spec in specs if not sweep.engine.capabilities.needs_base_url else ():
            if need > spec.max_model_len:
                raise UserInputError(f"workload {w.name!r}: trace {w.trace_path} has a request of {need} tokens "
                                     f"(input + output) but server.max_model_len is {spec.max_model_len}")
    for p in points:
        check_send_time(p.load)
    engine = engine_class(sweep.engine.kind)
    engine.preflight(specs, sweep)  # e.g. a pinned acceptance needs a vLLM that has it
    if executor == "local":
        check_local_gpus(sweep, specs, engine)  # a GPU sweep on a machine without those GPUs
    rate = pricing.usd_per_gpu_hour(sweep)  # an unknown GPU/tier fails before anything starts
    notes = list(filter(None, {uncataloged_note(s.model) for s in specs}))
    return RunPlan(sweep=sweep, specs=specs, points=points, engine=engine, rate=rate, pricing=pricing,
                   resume=Path(resume) if resume is not None else None, executor=executor, notes=notes,
                   workload_files=files)


def check_workload_bounds(w: WorkloadSpec) -> None:
    """Every length field, and the longest request the config asks for, within MAX_REQUEST_TOKENS, for every
    engine (max_model_len is checked against the config when the sweep loads, where the engine states it)."""
    for name in LENGTH_FIELDS:
        v = getattr(w, name)
        if v > MAX_REQUEST_TOKENS:
            raise UserInputError(f"workload {w.name!r}: {name} is {v:,}, above the {MAX_REQUEST_TOKENS:,} tokens "
                                 "of MAX_REQUEST_TOKENS (the longest published context window)")
    need = max_request_tokens(w)
    if need is not None and need > MAX_REQUEST_TOKENS:
        raise UserInputError(f"workload {w.name!r}: needs {need:,} tokens per request (input + output), above the "
                             f"{MAX_REQUEST_TOKENS:,} of MAX_REQUEST_TOKENS")


def send_time_s(lp: LoadPoint) -> float:
    """About how long a rate point takes to send its requests (0 for closed loop, which the server paces)."""
    if lp.request_rate is None:
        return (lp.ramp_s or 0.0) + (lp.duration_s or 0.0)
    measured = lp.until.max_requests if lp.until is not None else lp.num_requests  # `until` may send up to its cap
    n = lp.effective_warmup + (0 if lp.duration_s is not None else measured)
    return (lp.ramp_s or 0.0) + n / lp.request_rate + (lp.duration_s or 0.0)


def check_send_time(lp: LoadPoint) -> None:
    """A point that would take more than MAX_POINT_SEND_S to send its requests is refused, naming the numbers."""
    t = send_time_s(lp)
    if t > MAX_POINT_SEND_S:
        what = (f"request_rate {lp.request_rate:g} req/s" if lp.request_rate is not None else "its load")
        raise UserInputError(f"load: a point at {what} would take {t:,.0f} s to send its requests (ramp_s + "
                             f"requests / request_rate + duration_s), above the {MAX_POINT_SEND_S:,.0f} s of "
                             "MAX_POINT_SEND_S; raise request_rate or send fewer requests")


def check_ca_file(path: str | None) -> None:
    """`engine.ca_file` opened and parsed as a PEM CA bundle now, naming the path: a missing or bad file used
    to fail every point with an SSL error that did not name it."""
    if path is None:
        return
    import ssl

    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"engine.ca_file: {path}: " + ("is a directory" if p.is_dir() else "no such file"))
    try:
        ssl.create_default_context(cafile=str(p))
    except OSError as e:  # ssl.SSLError is an OSError
        reason = getattr(e, "reason", None) or e.strerror or str(e)
        raise UserInputError(f"engine.ca_file: {path}: not a usable PEM CA bundle ({reason})") from None
    except ValueError as e:
        raise UserInputError(f"engine.ca_file: {path}: {e}") from None


def _file_max_tokens(kind: str, data: Any) -> int | None:
    from bench.measure.kinds import workload_kind

    return workload_kind(kind).file_max_tokens(data)


def check_local_gpus(sweep: Sweep, specs: list[ServerSpec] | None = None, engine: type[Engine] | None = None,
                     inventory: list[str] | None = None) -> None:
    """A sweep whose engine runs on this machine's GPUs (vllm, vllm-offline) and whose hardware is an NVIDIA
    GPU of configs/hardware.yaml needs that many of those GPUs here (`nvidia-smi`; `inventory` for tests).
    Why: on the wrong machine every point would fail minutes later with an engine error far from the
    cause (or silently run on fewer/other GPUs); one line naming what is needed and what was found is
    better. CPU stand-ins and non-NVIDIA GPUs are not checked."""
    if not (engine or engine_class(sweep.engine.kind)).uses_local_gpus:
        return
    gpu_id = sweep.hardware.gpu
    spec = load_hardware().gpu(gpu_id)
    if spec.is_cpu_standin or not (spec.name or "").startswith("NVIDIA"):
        return
    need = max(sweep.gpu_count(s) for s in (specs if specs is not None else sweep.server_specs()))
    found = envinfo.gpu_inventory() if inventory is None else inventory
    model = re.compile(rf"\b{re.escape(gpu_id)}\b", re.IGNORECASE)
    matching = [g for g in found if model.search(g)]
    if len(matching) < need:
        seen = ", ".join(found) if found else "no NVIDIA GPU (nvidia-smi lists none)"
        raise UserInputError(f"hardware: this sweep needs {need}x {gpu_id} ({spec.name}) on this machine; "
                             f"found {len(matching)}: {seen}")
