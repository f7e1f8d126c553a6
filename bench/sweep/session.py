"""One server group: its engine, started once, and the measurement of each of its points.

Why a module of its own: both executors run groups through it (`run_group` locally, the Ray
executor inside its tasks) and `tune` measures single points through a `GroupSession`; none of
them needs the sweep-level code in bench.sweep.run, so neither imports it (no cycle).

What a point's row is made of (every column is declared in bench.sweep.rows): the point's config
(`base_row`), the request metrics (measure.metrics.summarize), the load generator's timing
(LoadResult.columns), GPU energy (`telemetry_columns`, from measure.nvml), the server's /metrics
deltas (`ServerProbe`, from measure.prometheus) and the first cost columns (`cost`: a callback the caller
passes, bench.econ.row_cost.cost_columns from the CLI; this layer computes no economics).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import pandas as pd

from bench.config.sweep import Point, ServerSpec, Sweep
from bench.engines.base import BatchEngine, Engine, EngineStartError
from bench.engines.registry import create_engine
from bench.errors import UserInputError
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.health import HealthWatch, ServerDown, watch_load
from bench.measure.loadgen import CannotSustainRate, LoadResult, run_load
from bench.measure.metrics import RequestRecord, offline_summary, summarize
from bench.measure.nvml import GpuSampler, TelemetryResult, derive_energy_metrics, unavailable
from bench.measure.prompts import STREAM_COOLDOWN, STREAM_MEASURED, STREAM_WARMUP, point_seed_offset
from bench.measure.redact import redact
from bench.measure.workloads import PromptFactory, iter_requests
from bench.sweep.events import ProgressFn
from bench.sweep.pricing import UNPRICED
from bench.sweep.probe import ServerProbe, health_watch
from bench.sweep.rows import START_FAILED, row_source, validate_row
from bench.sweep.store import RunStore
from bench.sweep.timing import WallTime

Group = list[tuple[int, Point]]
CostFn = Callable[[dict[str, Any]], dict[str, Any]]  # a measured row -> its cost columns (bench.sweep.pricing)


@dataclass
class GroupStats:
    """What one server group did; summed into the RunSummary (also across Ray tasks)."""

    server_starts: int = 0
    points_run: int = 0
    points_failed: int = 0
    measured_s: float = 0.0
    wall: WallTime = field(default_factory=WallTime)  # where the group's wall time went (bench.sweep.timing)
    groups: list[dict[str, Any]] = field(default_factory=list)  # per group: server_hash and its wall buckets

    def add_to(self, summary: Any) -> None:
        summary.server_starts += self.server_starts
        summary.points_run += self.points_run
        summary.points_failed += self.points_failed
        summary.measured_s += self.measured_s
        summary.wall.add(self.wall)
        summary.groups += self.groups


FALLBACK_VOCAB = 4096  # words of the catalog twins' word-level vocabulary (bench.config.vocab)


def prompt_factory(model: str, model_path: str) -> PromptFactory:
    """Exact-length prompts from the served model's own tokenizer.

    A model dir without a local tokenizer.json (e.g. a hub id) falls back to the catalog twin's
    word vocabulary; its prompt lengths are then only as exact as the server's usage.
    """
    from bench.config.catalog import load_models

    models = load_models()
    vocab = models[model].hp.vocab_size if model in models else 2048
    # the word generator has ~5,700 words: a full-size model's catalog vocabulary (150k) falls back to the
    # tiny twins' 4,096 words (prompt lengths stay exact in words; only which words differ)
    return PromptFactory.for_model_dir(model_path) or PromptFactory.for_vocab_size(min(vocab, FALLBACK_VOCAB))


class GroupSession:
    """One server spec's engine, started once and shared by every point measured through it.

    The sweep measures a group's points in order; `tune` asks for points one at a time as its
    search goes. The engine starts on the first point, is restarted before a point when it died
    in an earlier one, and a failed start fails every later point of the group with the engine's
    reason: it is not retried, because the same spec on the same hardware fails the same way.
    """

    def __init__(self, sweep: Sweep, spec: ServerSpec, sink: RunStore, rate: float | None, on_gpu: bool,
                 emit: ProgressFn, expected_points: int | None = None, cost: CostFn = UNPRICED.cost_columns) -> None:
        self.sweep, self.spec, self.sink, self.rate, self.on_gpu, self.emit = sweep, spec, sink, rate, on_gpu, emit
        self.cost = cost
        self.expected_points = expected_points
        self.engine: Engine | None = None
        self.factory: PromptFactory | None = None
        self.start_error: str | None = None
        self.hung = False  # the health watch failed a point while the process still ran: restart it
        self.reset_warned = False  # a failed prefix-cache reset was reported (once per group)
        self._point_t0 = time.monotonic()
        self.stats = GroupStats()

    def __enter__(self) -> GroupSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.engine is not None:
            t0 = time.monotonic()
            self.engine.stop()
            self.stats.wall.server_stop_s += time.monotonic() - t0
            timing = {"server_hash": self.spec.server_hash, **self.stats.wall.as_dict()}
            self.stats.groups.append(timing)
            self.emit({"type": "group_done", "server_hash": self.spec.server_hash, "timing": timing})

    def _start(self, restart: bool) -> None:
        assert self.engine is not None
        self.hung = False
        t0 = time.monotonic()
        try:
            if restart:
                self.engine.stop()
            self.engine.start()
        except EngineStartError as e:
            self.stats.wall.server_start_s += time.monotonic() - t0
            self.stats.server_starts += 1
            self.start_error = f"{START_FAILED}{'restart' if restart else 'start'}: {e}"
            self.emit({"type": "server_failed", "server_hash": self.spec.server_hash, "error": self.start_error})
            return
        self.stats.wall.server_start_s += time.monotonic() - t0
        if self.engine.starts_server:
            self.stats.server_starts += 1
        self.emit({"type": "server_ready", "server_hash": self.spec.server_hash, "pid": self.engine.pid,
                   "restart": restart, "startup_s": self.engine.startup_s})

    def _ensure_engine(self) -> None:
        if self.engine is None:
            self.emit({"type": "server_starting", "server": self.spec.model_dump(),
                       "server_hash": self.spec.server_hash, "points": self.expected_points})
            self.engine = create_engine(self.spec, self.sweep.engine, self.sink.log_path(self.spec.server_hash),
                                        self.on_gpu)
            self.factory = prompt_factory(self.spec.model, self.engine.model_path)
            self._start(restart=False)
        elif self.start_error is None and (self.hung or not self.engine.alive()):
            # the server died (or hung: it stopped answering /health) in an earlier point of this group:
            # start a fresh one
            self._start(restart=True)

    def _write(self, row: dict[str, Any], requests: pd.DataFrame | None = None) -> None:
        """Write the point's row, with its wall seconds so far (from the end of any engine start)."""
        row["point_wall_s"] = time.monotonic() - self._point_t0
        self.sink.write_point(row, requests)
        full = validate_row(row)  # the row as stored: every declared column (the import ones are None here)
        row.clear()
        row.update(full)

    def measure(self, idx: int, point: Point) -> dict[str, Any]:
        """Measure one point of this group (index = its position in the sweep) and write its row."""
        if point.server_hash != self.spec.server_hash:
            raise ValueError("point does not belong to this server group")
        self._ensure_engine()
        self._point_t0 = time.monotonic()
        self.stats.points_run += 1
        if self.start_error is not None:
            row = base_row(self.sweep, point, idx, self.sink.run_id, self.rate, self.on_gpu)
            row.update({"status": "failed", "error": self.start_error})
            self._write(row)
            self.stats.points_failed += 1
            self.stats.wall.add_point(row)  # its seconds are the point's, not "outside any group"
            self.emit({"type": "point_done", "row": row, "skipped_requests": point.load.num_requests})
            return row
        assert self.engine is not None
        measure = self._measure_batch if self.engine.batch else self._measure_online
        row = measure(point, idx, self.engine)
        if not getattr(self.engine, "simulated", False):  # simulated seconds are not wall time spent measuring
            self.stats.measured_s += row.get("duration_s") or 0.0
        if row["status"] != "ok":
            self.stats.points_failed += 1
        self.stats.wall.add_point(row)
        self.emit({"type": "point_done", "row": row})
        return row

    def _measure_online(self, point: Point, idx: int, engine: Engine) -> dict[str, Any]:
        """Streamed requests over HTTP: warm-up, the measured requests, then cool-down load."""
        sweep, store, emit = self.sweep, self.sink, self.emit
        row = base_row(sweep, point, idx, store.run_id, self.rate, self.on_gpu)
        row["started_at"] = datetime.now(timezone.utc).isoformat()
        factory = self.factory
        assert factory is not None
        lp = point.load
        # Endless request streams; the load generator takes warm-up, measured (count or duration) and cool-down.
        measured, warm, cool = (iter_requests(point.workload, factory, seed_offset=point_seed_offset(point.point_id, s))
                                for s in (STREAM_MEASURED, STREAM_WARMUP, STREAM_COOLDOWN))
        emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
        sample = self.on_gpu and engine.uses_local_gpus
        sampler = GpuSampler(device_indices=gpu_indices(point.gpu_count)) if sample else None
        probe = ServerProbe(reset_cache=engine.starts_server and point.server.resets_prefix_cache)
        simulated = getattr(engine, "simulated", False)  # a virtual engine runs the point in simulated time
        server_cols: dict[str, Any] = {}
        secret: str | None = None  # the endpoint's API key: every form of it is masked in the row's error
        partial = LoadResult()  # filled as requests finish: what is left when the health watch cancels the load
        try:
            if simulated:
                result, server_cols = engine.simulate(  # type: ignore[attr-defined]
                    sweep, point, warm, measured, cool, factory,
                    on_done=lambda rec: emit({"type": "request_done", "ok": rec.ok}))
            else:
                cfg = engine.client_config(point.workload.endpoint, lp.timeout_s)
                secret = cfg.api_key
                probe.base_url = cfg.base_url
                if sampler is not None:
                    sampler.start()
                watch = health_watch(engine, cfg)
                result = run_async(_drive(cfg, engine.count_tokens(), warm, measured, point, emit, cool, probe,
                                          watch=watch, partial=partial))
        except UserInputError:
            raise
        except ServerDown as e:  # the server died or hung mid-point: fail it now, not at its timeout
            if engine.starts_server and engine.alive():
                self.hung = True
            measured_recs = [r for r in partial.records if r.measured]
            done = sum(1 for r in measured_recs if r.ok)
            total = row["num_requests"] if isinstance(row["num_requests"], int) else len(measured_recs)
            row.update({"status": "failed", "completed": done, "failed": max(total - done, 0),
                        "finished_at": datetime.now(timezone.utc).isoformat(),
                        "error": redact(f"{e.reason}; {done} of {total} measured requests had finished", secret)})
            self._write(row, requests_frame(partial.records, point.point_id))
            return row
        except CannotSustainRate as e:  # the endpoint's own limit, said as such (not a harness fault)
            row.update({"status": "failed", "error": redact(str(e), secret)})
            self._write(row)
            return row
        except Exception as e:  # a harness fault must not end the sweep
            row.update({"status": "failed", "error": redact(f"{type(e).__name__}: {e}", secret)})
            self._write(row)
            return row
        finally:
            telemetry = sampler.stop() if sampler is not None else unavailable(
                "not measured: simulated (virtual engine)" if simulated else
                "not measured: no NVIDIA GPU" if not self.on_gpu else "not measured: external endpoint")
        row.update(summarize(result.records, gpu_count=point.gpu_count, slo=sweep.slo))
        row.update(result.columns())
        row.update(telemetry_columns(telemetry, row))
        row.update(probe.columns())
        row.update(probe.phase_columns())
        if probe.reset_error is not None and not self.reset_warned:  # once per group: the cache could not be emptied
            self.reset_warned = True
            emit({"type": "warning", "message": f"server {self.spec.server_hash}: prefix cache not reset before "
                                                f"point {idx} ({probe.reset_error}); its hit rate may include "
                                                "earlier points' prompts"})
        stopped = server_cols.pop("error", None)
        row.update(server_cols)
        row["finished_at"] = datetime.now(timezone.utc).isoformat()
        row.update(self.cost(row))
        errors = [r.error for r in result.records if r.measured and r.error]
        if stopped is not None:  # a simulation that could not finish: the queue grew without bound
            row["status"] = "failed" if row["completed"] == 0 else "partial"
            row["error"] = stopped
        elif row["completed"] == row["num_requests"]:
            row["status"] = "ok"
        else:
            died = not engine.alive() or (bool(errors) and exits_soon(engine))
            reason = f"server died: {engine.failure_reason()}" if died else (errors[0] if errors else "unknown")
            row["status"] = "failed" if row["completed"] == 0 or died else "partial"
            row["error"] = f"{len(errors)} of {row['num_requests']} requests failed; first: {reason}"
        row["error"] = redact(row["error"], secret)  # the client masked each request's; this is the last gate
        self._write(row, requests_frame(result.records, point.point_id))
        return row

    def _measure_batch(self, point: Point, idx: int, engine: Engine) -> dict[str, Any]:
        """One offline batch: num_requests prompts after the warm-up batch, in the engine's child process."""
        store, emit = self.sink, self.emit
        row = base_row(self.sweep, point, idx, store.run_id, self.rate, self.on_gpu)
        row["started_at"] = datetime.now(timezone.utc).isoformat()
        lp, factory = point.load, self.factory
        assert factory is not None
        emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
        reqs = list(itertools.islice(iter_requests(point.workload, factory,
                                                   seed_offset=point_seed_offset(point.point_id, STREAM_MEASURED)),
                                     lp.num_requests))
        warm = list(itertools.islice(iter_requests(point.workload, factory,
                                                   seed_offset=point_seed_offset(point.point_id, STREAM_WARMUP)),
                                     lp.warmup_requests))
        try:
            res = cast(BatchEngine, engine).run_batch([r.prompt or "" for r in reqs], [r.prompt or "" for r in warm],
                                                      point.workload.output_len, lp.timeout_s)
        except EngineStartError as e:
            row.update({"status": "failed", "error": str(e)})
            self._write(row)
            return row
        row.update(offline_summary(res.elapsed_s, res.num_prompts, res.completed, res.input_tokens,
                                   res.output_tokens, gpu_count=point.gpu_count))
        row.update({"load_mode": "offline", "client_kept_up": None,
                    "telemetry_available": False, "telemetry_reason": "not measured: offline mode"})
        row["finished_at"] = datetime.now(timezone.utc).isoformat()
        row.update(self.cost(row))
        row["status"] = "ok" if res.completed == res.num_prompts else "partial"
        if row["status"] != "ok":
            row["error"] = f"{res.num_prompts - res.completed} of {res.num_prompts} prompts did not finish"
        for _ in range(lp.num_requests):
            emit({"type": "request_done", "ok": True})
        self._write(row)
        return row


def run_group(sweep: Sweep, group: Group, sink: RunStore, rate: float | None, on_gpu: bool,
              emit: ProgressFn, cost: CostFn = UNPRICED.cost_columns) -> GroupStats:
    """Measure all points of one server group (same ServerSpec) on one engine start."""
    spec = group[0][1].server
    with GroupSession(sweep, spec, sink, rate, on_gpu, emit, expected_points=len(group), cost=cost) as session:
        for idx, point in group:
            session.measure(idx, point)
    return session.stats


def base_row(sweep: Sweep, point: Point, idx: int, run_id: str, rate: float | None, on_gpu: bool) -> dict[str, Any]:
    """The columns a point has before (or without) being measured: its config, hardware and price."""
    s, w, lp = point.server, point.workload, point.load
    return {
        "run_id": run_id, "point_id": point.point_id, "point_index": idx, "server_hash": point.server_hash,
        "status": None, "error": None,
        "source": row_source(None, sweep.engine.kind),
        "model": s.model, "engine": sweep.engine.kind, "dtype": s.dtype, "quantization": s.quantization or "none",
        "kv_cache_dtype": s.kv_cache_dtype, "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
        "max_num_batched_tokens": s.max_num_batched_tokens, "enable_prefix_caching": s.enable_prefix_caching,
        "prefix_cache_between_points": s.prefix_cache_between_points,
        "tensor_parallel_size": s.tensor_parallel_size, "expert_parallel": s.expert_parallel,
        **speculative_columns(s),
        "disagg": s.disagg.label(s.tensor_parallel_size) if s.disagg is not None else None,
        "device": "gpu" if on_gpu else "cpu", "gpu_type": sweep.hardware.gpu, "gpu_count": point.gpu_count,
        "hardware_tier": sweep.hardware.tier if sweep.hardware.usd_per_gpu_hour is None else "override",
        "workload": w.name, "workload_kind": w.kind, "endpoint": w.endpoint, "input_len": w.input_len,
        "output_len": w.output_len, "concurrency": lp.concurrency, "request_rate": lp.request_rate,
        "num_requests": lp.num_requests, "warmup_requests": lp.warmup_requests,
        "slo_ttft_ms": sweep.slo.ttft_ms, "slo_tpot_ms": sweep.slo.tpot_ms, "slo_e2el_ms": sweep.slo.e2el_ms,
        "usd_per_gpu_hour": rate,
        "completed": 0, "failed": lp.num_requests,
    }


# vLLM's API server keeps answering (HTTP 500, "EngineCore encountered an issue") for a few seconds after its
# engine died, until its watchdog (every 5 s, vllm/entrypoints/launchers/launcher.py) shuts it down: an engine
# that starts, passes /health and dies on its first request (e.g. synthetic speculative sampling on the CPU
# build) is only recognised, and its log's root cause read, once the process has exited.
ENGINE_EXIT_GRACE_S = 12.0


def exits_soon(engine: Engine, grace_s: float = ENGINE_EXIT_GRACE_S) -> bool:
    """True when a server engine that failed requests exits within `grace_s` (it was dying)."""
    if not engine.starts_server:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not engine.alive():
            return True
        time.sleep(0.5)
    return False


def speculative_columns(s: ServerSpec) -> dict[str, Any]:
    """The configured speculation of a point (K = 0 and nulls when the server does not speculate)."""
    sp = s.speculative
    if sp is None:
        return {"spec_method": None, "spec_num_speculative_tokens": 0, "spec_pinned_acceptance_length": None,
                "spec_pinned_acceptance_rates": None}
    rates = None if sp.acceptance_rates is None else json.dumps(list(sp.acceptance_rates))
    return {"spec_method": sp.method, "spec_num_speculative_tokens": sp.num_speculative_tokens,
            "spec_pinned_acceptance_length": sp.acceptance_length, "spec_pinned_acceptance_rates": rates}


async def _drive(cfg: ClientConfig, count: Callable[[str], int] | None, warm: Any, measured: Any,
                 point: Point, emit: ProgressFn, cool: Any = None, probe: ServerProbe | None = None, *,
                 watch: HealthWatch | None = None, partial: LoadResult | None = None) -> LoadResult:
    """The point's load, watched by `watch` (a failed watch cancels it: ServerDown; `partial` keeps its records)."""
    if probe is not None:
        await probe.before_load()
        probe.mark("load_start")
    async with StreamingClient(cfg, count) as client:
        load = run_load(client.send, warm, measured, point.load, seed=point.workload.seed,
                        on_done=lambda rec: emit({"type": "request_done", "ok": rec.ok}),
                        cooldown=cool, on_phase=probe.on_phase if probe is not None else None, result=partial)
        result = await watch_load(load, watch)
    if probe is not None:
        probe.mark("load_end")
    for rec in client.cancelled:  # cool-down requests cut off at the end of the measured phase
        rec.warmup, rec.cooldown = False, True
        result.records.append(rec)
    return result


def gpu_indices(count: int) -> list[int]:
    """NVML indices of the GPUs the server uses: the first `count` of CUDA_VISIBLE_DEVICES, else 0..count-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [int(x) for x in visible.split(",") if x.strip().isdigit()]
    return ids[:count] if len(ids) >= count else list(range(count))


def telemetry_columns(tel: TelemetryResult, row: dict[str, Any]) -> dict[str, Any]:
    """Energy of the measured window and its per-token figures; every number None when not measured.

    The sampler covers the whole point (warm-up and cool-down keep the same load on), so the
    measured window's energy is the point's mean power x the window's duration.
    """
    duration_s, out_tok = row.get("duration_s"), row.get("output_tokens")
    energy_j = tel.mean_power_w * duration_s if tel.mean_power_w is not None and duration_s else None
    derived = derive_energy_metrics(energy_j, out_tok, duration_s)
    return {
        "telemetry_available": tel.available, "telemetry_reason": tel.reason, "energy_j": energy_j,
        "energy_source": tel.energy_source, "mean_power_w": tel.mean_power_w, "peak_memory_gb": tel.peak_memory_gb,
        "gpu_util_mean_pct": tel.gpu_util_mean_pct, "j_per_output_token": derived["j_per_output_token"],
        "output_tok_s_per_mw": derived["output_tok_s_per_mw"],
    }


def requests_frame(records: list[RequestRecord], point_id: str) -> pd.DataFrame:
    """Per-request observations; ITL samples kept as a list per request."""
    rows = []
    for r in records:
        rows.append({
            "point_id": point_id, "request_idx": r.request_idx, "warmup": r.warmup, "ok": r.ok, "error": r.error,
            "protocol_error": r.protocol_error,
            "http_status": r.http_status, "input_tokens": r.input_tokens, "max_tokens": r.max_tokens,
            "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens if r.ok else None,
            "usage_completion_tokens": r.usage_completion_tokens, "client_output_tokens": r.client_output_tokens,
            "send_ns": r.send_ns, "scheduled_ns": r.scheduled_ns, "done_ns": r.done_ns,
            "ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms, "e2el_ms": r.e2el_ms,
            "cooldown": r.cooldown, "cancelled": r.cancelled,
            "num_chunks": len(r.chunk_ns), "coalesced_chunks": r.coalesced_chunks, "itl_ms": r.itl_ms,
            "timestamp_source": r.timestamp_source,
            "cached_input_tokens": r.cached_input_tokens, "session_id": r.session_id, "turn": r.turn,
            "chunk_ns": list(r.chunk_ns), "chunk_tokens": list(r.chunk_tokens),
        })
    return pd.DataFrame(rows)
