"""Run a sweep: group points by server spec, start each engine once, measure each point.

Why grouping: a vLLM start costs 15-60 s (minutes for a large model on GPUs), a load point
often less. Every point that shares a `ServerSpec` reuses one server. A failure is confined to
what it breaks: an engine that cannot start fails its group's points (with the reason from its
log) and the next group starts fresh; a server that dies during a point fails that point and is
restarted for the group's remaining points.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench import envinfo
from bench.client import ClientConfig, StreamingClient
from bench.config import Point, ServerSpec, Sweep
from bench.cost import usd_per_m_tokens
from bench.engines.vllm_server import SERVED_MODEL_NAME, EngineStartError, VllmServer, has_nvidia_gpu
from bench.errors import UserInputError
from bench.loadgen import LoadResult, run_load
from bench.metrics import RequestRecord, SloThresholds, summarize
from bench.modeldir import load_tokenizer, resolve_model_path
from bench.store import RunStore
from bench.workloads import PromptFactory, generate

Event = dict[str, Any]
ProgressFn = Callable[[Event], None]


@dataclass
class RunSummary:
    run_dir: Path
    points_total: int
    points_run: int = 0
    points_skipped: int = 0
    points_failed: int = 0
    server_starts: int = 0
    wall_s: float = 0.0
    measured_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sweep_efficiency(self) -> float | None:
        """Sum of the points' measured durations / sweep wall time (1.0 = no overhead)."""
        return self.measured_s / self.wall_s if self.wall_s > 0 else None


def new_run_dir(sweep: Sweep, out_root: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(out_root) / f"{sweep.name}-{stamp}"
    d, n = base, 1
    while d.exists():
        n += 1
        d = Path(f"{base}-{n}")
    return d


def hardware_rate(sweep: Sweep) -> float:
    """$/GPU-hour for the sweep's hardware: explicit override, else the named tier."""
    if sweep.hardware.usd_per_gpu_hour is not None:
        return sweep.hardware.usd_per_gpu_hour
    from bench.config import resolve_usd_per_gpu_hour

    return resolve_usd_per_gpu_hour(sweep.hardware.gpu, sweep.hardware.tier)


def run_sweep(sweep: Sweep, out_root: Path = Path("results"), resume: Path | None = None,
              progress: ProgressFn | None = None) -> RunSummary:
    emit = progress or (lambda e: None)
    rate = hardware_rate(sweep)  # fail on an unknown GPU/tier before starting anything
    run_dir = Path(resume) if resume else new_run_dir(sweep, out_root)
    if resume and not (run_dir / "sweep.yaml").is_file():
        raise UserInputError(f"--resume: {run_dir} is not a maas-bench run directory")
    store = RunStore(run_dir)
    if not resume:
        store.init(sweep.model_dump(mode="json"), envinfo.collect())
    points = sweep.points()
    done = store.finished_point_ids()
    summary = RunSummary(run_dir=run_dir, points_total=len(points))
    t_start = time.monotonic()
    groups: dict[str, list[tuple[int, Point]]] = {}
    for i, p in enumerate(points):
        if p.point_id in done:
            summary.points_skipped += 1
            continue
        groups.setdefault(p.server_hash, []).append((i, p))
    emit({"type": "start", "run_dir": str(run_dir), "points": len(points), "skipped": summary.points_skipped,
          "requests": sum(p.load.num_requests for g in groups.values() for _, p in g)})
    on_gpu = has_nvidia_gpu()
    for group in groups.values():
        _run_group(sweep, group, store, rate, on_gpu, summary, emit)
    summary.wall_s = time.monotonic() - t_start
    summary.rows = store.rows()
    emit({"type": "end", "summary": summary})
    return summary


class _Engine:
    """Either a vLLM server we own or an external OpenAI-compatible endpoint."""

    def __init__(self, sweep: Sweep, spec: ServerSpec, store: RunStore, on_gpu: bool) -> None:
        self.sweep, self.spec, self.store, self.on_gpu = sweep, spec, store, on_gpu
        self.server: VllmServer | None = None
        self.model_path, self.materialized = resolve_model_path(spec.model, spec.quantization)
        self.tokenizer = load_tokenizer(self.model_path)

    def start(self) -> None:
        if self.sweep.engine.kind != "vllm":
            return
        self.server = VllmServer(self.spec, self.model_path, self.sweep.engine,
                                 self.store.log_path(self.spec.server_hash), on_cpu=not self.on_gpu)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def alive(self) -> bool:
        return self.server is None or self.server.alive()

    def failure_reason(self) -> str:
        return self.server.failure_reason() if self.server is not None else "endpoint unavailable"

    def client_config(self, point: Point) -> ClientConfig:
        eng = self.sweep.engine
        if eng.kind == "vllm":
            assert self.server is not None
            return ClientConfig(base_url=self.server.base_url, model=SERVED_MODEL_NAME,
                                endpoint=point.workload.endpoint, timeout_s=point.load.timeout_s)
        key = os.environ.get(eng.api_key_env) if eng.api_key_env else None
        if eng.api_key_env and not key:
            raise UserInputError(f"engine.api_key_env: environment variable {eng.api_key_env} is not set")
        return ClientConfig(base_url=eng.base_url or "", model=eng.served_model_name or self.spec.model,
                            endpoint=point.workload.endpoint, api_key=key, timeout_s=point.load.timeout_s,
                            ignore_eos=eng.pin_output_length)

    def count_tokens(self) -> Callable[[str], int] | None:
        tok = self.tokenizer
        if tok is None:
            return None
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)

    def prompt_factory(self) -> PromptFactory:
        from bench.catalog import load_models

        if self.spec.model in load_models():
            return PromptFactory.for_vocab_size(load_models()[self.spec.model].hp.vocab_size)
        return PromptFactory.for_vocab_size(2048)


def _run_group(sweep: Sweep, group: list[tuple[int, Point]], store: RunStore, rate: float, on_gpu: bool,
               summary: RunSummary, emit: ProgressFn) -> None:
    spec = group[0][1].server
    engine = _Engine(sweep, spec, store, on_gpu)
    emit({"type": "server_starting", "server": spec.model_dump(), "points": len(group)})
    start_error: str | None = None
    try:
        engine.start()
        summary.server_starts += 1 if sweep.engine.kind == "vllm" else 0
        emit({"type": "server_ready", "startup_s": engine.server.startup_s if engine.server else 0.0})
    except EngineStartError as e:
        summary.server_starts += 1
        start_error = f"engine failed to start: {e}"
        emit({"type": "server_failed", "error": start_error})
    try:
        for idx, point in group:
            if start_error is None and not engine.alive():
                # the server died in an earlier point of this group: start a fresh one
                try:
                    engine.stop()
                    engine.start()
                    summary.server_starts += 1
                except EngineStartError as e:
                    start_error = f"engine failed to restart: {e}"
            if start_error is not None:
                row = _base_row(sweep, point, idx, store.run_id, rate, on_gpu)
                row.update({"status": "failed", "error": start_error})
                store.write_point(row)
                summary.points_run += 1
                summary.points_failed += 1
                emit({"type": "point_done", "row": row, "skipped_requests": point.load.num_requests})
                continue
            row = _measure_point(sweep, point, idx, engine, store, rate, on_gpu, emit)
            summary.points_run += 1
            summary.measured_s += row.get("duration_s") or 0.0
            if row["status"] != "ok":
                summary.points_failed += 1
            emit({"type": "point_done", "row": row})
    finally:
        engine.stop()


def _base_row(sweep: Sweep, point: Point, idx: int, run_id: str, rate: float, on_gpu: bool) -> dict[str, Any]:
    s, w, lp = point.server, point.workload, point.load
    return {
        "run_id": run_id, "point_id": point.point_id, "point_index": idx, "server_hash": point.server_hash,
        "status": None, "error": None,
        "model": s.model, "engine": sweep.engine.kind, "dtype": s.dtype, "quantization": s.quantization or "none",
        "kv_cache_dtype": s.kv_cache_dtype, "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
        "max_num_batched_tokens": s.max_num_batched_tokens, "enable_prefix_caching": s.enable_prefix_caching,
        "tensor_parallel_size": s.tensor_parallel_size,
        "device": "gpu" if on_gpu else "cpu", "gpu_type": sweep.hardware.gpu, "gpu_count": point.gpu_count,
        "hardware_tier": sweep.hardware.tier if sweep.hardware.usd_per_gpu_hour is None else "override",
        "workload": w.name, "workload_kind": w.kind, "endpoint": w.endpoint, "input_len": w.input_len,
        "output_len": w.output_len, "concurrency": lp.concurrency, "request_rate": lp.request_rate,
        "num_requests": lp.num_requests, "warmup_requests": lp.warmup_requests,
        "slo_ttft_ms": sweep.slo.ttft_ms, "slo_tpot_ms": sweep.slo.tpot_ms, "slo_e2el_ms": sweep.slo.e2el_ms,
        "usd_per_gpu_hour": rate,
        "completed": 0, "failed": lp.num_requests,
    }


def _measure_point(sweep: Sweep, point: Point, idx: int, engine: _Engine, store: RunStore, rate: float,
                   on_gpu: bool, emit: ProgressFn) -> dict[str, Any]:
    row = _base_row(sweep, point, idx, store.run_id, rate, on_gpu)
    row["started_at"] = datetime.now(timezone.utc).isoformat()
    factory = engine.prompt_factory()
    lp = point.load
    measured = generate(point.workload, lp.num_requests, factory, seed_offset=idx)
    warm = generate(point.workload, lp.warmup_requests, factory, seed_offset=10_000 + idx)
    emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
    try:
        cfg = engine.client_config(point)
        result = asyncio.run(_drive(cfg, engine.count_tokens(), warm, measured, point, emit))
    except UserInputError:
        raise
    except Exception as e:  # a harness fault must not end the sweep
        row.update({"status": "failed", "error": f"{type(e).__name__}: {e}"})
        store.write_point(row)
        return row
    slo = SloThresholds(sweep.slo.ttft_ms, sweep.slo.tpot_ms, sweep.slo.e2el_ms)
    row.update(summarize(result.records, gpu_count=point.gpu_count, slo=slo))
    row.update({"requested_rate": result.requested_rate, "delivered_rate": result.delivered_rate,
                "max_send_lag_ms": result.max_send_lag_ms, "client_kept_up": result.client_kept_up})
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    row.update(cost_columns(row))
    errors = [r.error for r in result.records if not r.warmup and r.error]
    if row["completed"] == row["num_requests"]:
        row["status"] = "ok"
    else:
        died = not engine.alive()
        reason = f"server died: {engine.failure_reason()}" if died else (errors[0] if errors else "unknown")
        row["status"] = "failed" if row["completed"] == 0 or died else "partial"
        row["error"] = f"{len(errors)} of {row['num_requests']} requests failed; first: {reason}"
    store.write_point(row, requests_frame(result.records, point.point_id))
    return row


async def _drive(cfg: ClientConfig, count: Callable[[str], int] | None, warm: list, measured: list,
                 point: Point, emit: ProgressFn) -> LoadResult:
    async with StreamingClient(cfg, count) as client:
        return await run_load(client.send, warm, measured, point.load, seed=point.workload.seed,
                              on_done=lambda rec: emit({"type": "request_done", "ok": rec.ok}))


def cost_columns(row: dict[str, Any]) -> dict[str, float | None]:
    """First cost columns: $/M output and $/M total tokens at the point's measured throughput."""
    rate = row.get("usd_per_gpu_hour")
    out: dict[str, float | None] = {"usd_per_m_output": None, "usd_per_m_total": None}
    if not rate:
        return out
    if row.get("output_tok_s_per_gpu"):
        out["usd_per_m_output"] = usd_per_m_tokens(row["output_tok_s_per_gpu"], rate)
    if row.get("total_tok_s_per_gpu"):
        out["usd_per_m_total"] = usd_per_m_tokens(row["total_tok_s_per_gpu"], rate)
    return out


def requests_frame(records: list[RequestRecord], point_id: str) -> pd.DataFrame:
    """Per-request observations; ITL samples kept as a list per request."""
    rows = []
    for r in records:
        rows.append({
            "point_id": point_id, "request_idx": r.request_idx, "warmup": r.warmup, "ok": r.ok, "error": r.error,
            "http_status": r.http_status, "input_tokens": r.input_tokens, "max_tokens": r.max_tokens,
            "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens if r.ok else None,
            "usage_completion_tokens": r.usage_completion_tokens, "client_output_tokens": r.client_output_tokens,
            "send_ns": r.send_ns, "scheduled_ns": r.scheduled_ns, "done_ns": r.done_ns,
            "ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms, "e2el_ms": r.e2el_ms,
            "num_chunks": len(r.chunk_ns), "itl_ms": r.itl_ms,
        })
    return pd.DataFrame(rows)
