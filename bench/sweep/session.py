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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import pandas as pd

from bench.config.sweep import Point, ServerSpec, Sweep
from bench.engines.base import BatchEngine, Engine, EngineStartError
from bench.engines.registry import create_engine
from bench.errors import UserInputError
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.loadgen import LoadResult, run_load
from bench.measure.metrics import RequestRecord, offline_summary, summarize
from bench.measure.nvml import GpuSampler, TelemetryResult, derive_energy_metrics, unavailable
from bench.measure.redact import redact
from bench.measure.workloads import PromptFactory, iter_requests
from bench.sweep.events import ProgressFn
from bench.sweep.pricing import UNPRICED
from bench.sweep.store import RunStore

Group = list[tuple[int, Point]]
CostFn = Callable[[dict[str, Any]], dict[str, Any]]  # a measured row -> its cost columns (bench.sweep.pricing)


@dataclass
class GroupStats:
    """What one server group did; summed into the RunSummary (also across Ray tasks)."""

    server_starts: int = 0
    points_run: int = 0
    points_failed: int = 0
    measured_s: float = 0.0

    def add_to(self, summary: Any) -> None:
        summary.server_starts += self.server_starts
        summary.points_run += self.points_run
        summary.points_failed += self.points_failed
        summary.measured_s += self.measured_s


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
        self.stats = GroupStats()

    def __enter__(self) -> GroupSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()

    def _start(self, restart: bool) -> None:
        assert self.engine is not None
        try:
            if restart:
                self.engine.stop()
            self.engine.start()
        except EngineStartError as e:
            self.stats.server_starts += 1
            self.start_error = f"engine failed to {'restart' if restart else 'start'}: {e}"
            self.emit({"type": "server_failed", "server_hash": self.spec.server_hash, "error": self.start_error})
            return
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
        elif self.start_error is None and not self.engine.alive():
            # the server died in an earlier point of this group: start a fresh one
            self._start(restart=True)

    def measure(self, idx: int, point: Point) -> dict[str, Any]:
        """Measure one point of this group (index = its position in the sweep) and write its row."""
        if point.server_hash != self.spec.server_hash:
            raise ValueError("point does not belong to this server group")
        self._ensure_engine()
        self.stats.points_run += 1
        if self.start_error is not None:
            row = base_row(self.sweep, point, idx, self.sink.run_id, self.rate, self.on_gpu)
            row.update({"status": "failed", "error": self.start_error})
            self.sink.write_point(row)
            self.stats.points_failed += 1
            self.emit({"type": "point_done", "row": row, "skipped_requests": point.load.num_requests})
            return row
        assert self.engine is not None
        measure = self._measure_batch if self.engine.batch else self._measure_online
        row = measure(point, idx, self.engine)
        if not getattr(self.engine, "simulated", False):  # simulated seconds are not wall time spent measuring
            self.stats.measured_s += row.get("duration_s") or 0.0
        if row["status"] != "ok":
            self.stats.points_failed += 1
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
        measured = iter_requests(point.workload, factory, seed_offset=idx)
        warm = iter_requests(point.workload, factory, seed_offset=10_000 + idx)
        cool = iter_requests(point.workload, factory, seed_offset=20_000 + idx)
        emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
        sample = self.on_gpu and engine.uses_local_gpus
        sampler = GpuSampler(device_indices=gpu_indices(point.gpu_count)) if sample else None
        probe = ServerProbe()
        simulated = getattr(engine, "simulated", False)  # a virtual engine runs the point in simulated time
        server_cols: dict[str, Any] = {}
        secret: str | None = None  # the endpoint's API key: every form of it is masked in the row's error
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
                result = run_async(_drive(cfg, engine.count_tokens(), warm, measured, point, emit, cool, probe))
        except UserInputError:
            raise
        except Exception as e:  # a harness fault must not end the sweep
            row.update({"status": "failed", "error": redact(f"{type(e).__name__}: {e}", secret)})
            store.write_point(row)
            return row
        finally:
            telemetry = sampler.stop() if sampler is not None else unavailable(
                "not measured: simulated (virtual engine)" if simulated else
                "not measured: no NVIDIA GPU" if not self.on_gpu else "not measured: external endpoint")
        row.update(summarize(result.records, gpu_count=point.gpu_count, slo=sweep.slo))
        row.update(result.columns())
        row.update(telemetry_columns(telemetry, row))
        row.update(probe.columns())
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
        store.write_point(row, requests_frame(result.records, point.point_id))
        return row

    def _measure_batch(self, point: Point, idx: int, engine: Engine) -> dict[str, Any]:
        """One offline batch: num_requests prompts after the warm-up batch, in the engine's child process."""
        store, emit = self.sink, self.emit
        row = base_row(self.sweep, point, idx, store.run_id, self.rate, self.on_gpu)
        row["started_at"] = datetime.now(timezone.utc).isoformat()
        lp, factory = point.load, self.factory
        assert factory is not None
        emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
        reqs = list(itertools.islice(iter_requests(point.workload, factory, seed_offset=idx), lp.num_requests))
        warm = list(itertools.islice(iter_requests(point.workload, factory, seed_offset=10_000 + idx),
                                     lp.warmup_requests))
        try:
            res = cast(BatchEngine, engine).run_batch([r.prompt or "" for r in reqs], [r.prompt or "" for r in warm],
                                                      point.workload.output_len, lp.timeout_s)
        except EngineStartError as e:
            row.update({"status": "failed", "error": str(e)})
            store.write_point(row)
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
        store.write_point(row)
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
        "model": s.model, "engine": sweep.engine.kind, "dtype": s.dtype, "quantization": s.quantization or "none",
        "kv_cache_dtype": s.kv_cache_dtype, "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
        "max_num_batched_tokens": s.max_num_batched_tokens, "enable_prefix_caching": s.enable_prefix_caching,
        "tensor_parallel_size": s.tensor_parallel_size, "expert_parallel": s.expert_parallel,
        **speculative_columns(s),
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
                 point: Point, emit: ProgressFn, cool: Any = None, probe: ServerProbe | None = None) -> LoadResult:
    if probe is not None:
        await probe.scrape("before")
    async with StreamingClient(cfg, count) as client:
        result = await run_load(client.send, warm, measured, point.load, seed=point.workload.seed,
                                on_done=lambda rec: emit({"type": "request_done", "ok": rec.ok}),
                                cooldown=cool, on_phase=probe.on_phase if probe is not None else None)
    for rec in client.cancelled:  # cool-down requests cut off at the end of the measured phase
        rec.warmup, rec.cooldown = False, True
        result.records.append(rec)
    return result


SERVER_METRIC_COLUMNS = ("kv_cache_usage_frac", "prefix_cache_queries", "prefix_cache_hits", "prefix_cache_hit_rate",
                         "num_preemptions", "spec_num_drafts", "spec_num_draft_tokens", "spec_num_accepted_tokens",
                         "spec_draft_acceptance_rate", "spec_acceptance_length", "spec_accept_rate_per_pos",
                         "server_prompt_tokens", "server_generation_tokens")


class ServerProbe:
    """Scrapes the server's /metrics before the point's load starts and when its measured phase ends.

    Never during the measured phase: rendering /metrics blocks vLLM's API-server event loop (100+ ms
    on a busy CPU box), which would hold back the stream chunks being measured. The end scrape runs
    once the last measured request is done, while the cool-down load is still on, so gauges such as
    KV-cache usage describe the loaded server, not an idle one. Counters are differenced
    (bench.measure.prometheus), so they also count the warm-up's requests.
    """

    def __init__(self) -> None:
        self.base_url: str | None = None
        self.texts: dict[str, str | None] = {}

    async def scrape(self, name: str) -> None:
        if self.base_url is None:
            return
        import aiohttp

        from bench.measure.prometheus import fetch_metrics

        async with aiohttp.ClientSession() as session:
            self.texts[name] = await fetch_metrics(self.base_url, session)

    async def on_phase(self, name: str) -> None:
        if name == "measure_end":
            await self.scrape("after")

    def columns(self) -> dict[str, Any]:
        from bench.measure.prometheus import scrape_prometheus, vllm_metric_deltas

        before, after = self.texts.get("before"), self.texts.get("after")
        if before is None or after is None:
            return {**dict.fromkeys(SERVER_METRIC_COLUMNS), "server_metrics_available": False}
        d = vllm_metric_deltas(scrape_prometheus(before), scrape_prometheus(after))
        d["server_prompt_tokens"] = d.pop("prompt_tokens")
        d["server_generation_tokens"] = d.pop("generation_tokens")
        if d.get("spec_accept_rate_per_pos") is not None:  # a list: one JSON string column (parquet-friendly)
            d["spec_accept_rate_per_pos"] = json.dumps([round(r, 6) for r in d["spec_accept_rate_per_pos"]])
        return {**{k: d.get(k) for k in SERVER_METRIC_COLUMNS}, "server_metrics_available": True}


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
            "cached_input_tokens": r.cached_input_tokens, "session_id": r.session_id, "turn": r.turn,
            "chunk_ns": list(r.chunk_ns),
        })
    return pd.DataFrame(rows)
