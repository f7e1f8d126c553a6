"""Run a sweep: group points by server spec, start each engine once, measure each point.

Why grouping: a vLLM start costs 15-60 s (minutes for a large model on GPUs), a load point
often less. Every point that shares a `ServerSpec` reuses one server (`GroupSession`). A failure
is confined to what it breaks: an engine that cannot start fails its group's points (with the
reason from its log) and the next group starts fresh; a server that dies during a point fails
that point and is restarted for the group's remaining points.

Executors: `local` runs the groups one after another in this process; `ray` (bench/cluster.py)
runs each group as a Ray task and streams its rows back here, so one run dir gathers them all.
Either way only this process writes the run dir, and a point counts as finished once its row is
written, which is what `--resume` relies on.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.config.sweep import Point, ServerSpec, Sweep
from bench.econ.cost import usd_per_m_tokens
from bench.engines.modeldir import load_tokenizer, resolve_model_path
from bench.engines.vllm_server import SERVED_MODEL_NAME, EngineStartError, VllmServer, has_nvidia_gpu
from bench.errors import UserInputError
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.loadgen import LoadResult, run_load
from bench.measure.metrics import RequestRecord, SloThresholds, summarize
from bench.measure.telemetry import GpuSampler, TelemetryResult, derive_energy_metrics, unavailable
from bench.measure.workloads import PromptFactory, iter_requests
from bench.sweep import envinfo
from bench.sweep.store import RunStore

Event = dict[str, Any]
ProgressFn = Callable[[Event], None]
Group = list[tuple[int, Point]]
EXECUTORS = ("local", "ray")


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
    executor: str = "local"

    @property
    def sweep_efficiency(self) -> float | None:
        """Sum of the points' measured durations / sweep wall time (1.0 = no overhead).

        With parallel groups (`--executor ray`) it can exceed 1: it then also counts the parallelism.
        """
        return self.measured_s / self.wall_s if self.wall_s > 0 else None


@dataclass
class GroupStats:
    """What one server group did; summed into the RunSummary (also across Ray tasks)."""

    server_starts: int = 0
    points_run: int = 0
    points_failed: int = 0
    measured_s: float = 0.0

    def add_to(self, summary: RunSummary) -> None:
        summary.server_starts += self.server_starts
        summary.points_run += self.points_run
        summary.points_failed += self.points_failed
        summary.measured_s += self.measured_s


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
    from bench.config.hardware import resolve_usd_per_gpu_hour

    return resolve_usd_per_gpu_hour(sweep.hardware.gpu, sweep.hardware.tier)


def open_run(sweep: Sweep, out_root: Path, resume: Path | None) -> tuple[RunStore, Event | None]:
    """A fresh run dir, or the one being resumed; returns a warning event when its config changed."""
    run_dir = Path(resume) if resume else new_run_dir(sweep, out_root)
    if resume and not (run_dir / "sweep.yaml").is_file():
        raise UserInputError(f"--resume: {run_dir} is not a maas-bench run directory (no sweep.yaml)")
    store = RunStore(run_dir)
    if not resume:
        store.init(sweep.model_dump(mode="json"), envinfo.collect())
        return store, None
    stored = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    if stored != sweep.model_dump(mode="json"):
        # finished points are still matched by point id, so only points whose config is unchanged are skipped
        return store, {"type": "config_changed",
                       "message": f"resume: the config differs from {run_dir}/sweep.yaml; points whose "
                                  "resolved config changed are measured again"}
    return store, None


def group_points(points: list[Point], done: set[str]) -> tuple[list[Group], int]:
    """Unfinished points grouped by server spec, in sweep order; and how many were already done."""
    groups: dict[str, Group] = {}
    skipped = 0
    for i, p in enumerate(points):
        if p.point_id in done:
            skipped += 1
            continue
        groups.setdefault(p.server_hash, []).append((i, p))
    return list(groups.values()), skipped


def run_sweep(sweep: Sweep, out_root: Path = Path("results"), resume: Path | None = None,
              progress: ProgressFn | None = None, *, executor: str = "local",
              ray_address: str | None = None) -> RunSummary:
    """Measure every unfinished point of `sweep`; one server start per group of points sharing a spec."""
    if executor not in EXECUTORS:
        raise UserInputError(f"executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    emit = progress or (lambda e: None)
    rate = hardware_rate(sweep)  # fail on an unknown GPU/tier before starting anything
    store, warning = open_run(sweep, out_root, resume)
    if warning:
        emit(warning)
    points = sweep.points()
    groups, skipped = group_points(points, store.finished_point_ids())
    summary = RunSummary(run_dir=store.dir, points_total=len(points), points_skipped=skipped, executor=executor)
    t_start = time.monotonic()
    emit({"type": "start", "run_dir": str(store.dir), "points": len(points), "skipped": skipped,
          "groups": len(groups), "executor": executor,
          "requests": sum(p.load.num_requests for g in groups for _, p in g)})
    if executor == "ray" and groups:
        from bench.sweep.ray import run_groups_on_ray

        for stats in run_groups_on_ray(sweep, groups, store, rate, emit, address=ray_address):
            stats.add_to(summary)
    else:
        on_gpu = has_nvidia_gpu()
        for group in groups:
            run_group(sweep, group, store, rate, on_gpu, emit).add_to(summary)
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
        self._factory: PromptFactory | None = None

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

    @property
    def pid(self) -> int | None:
        """The server's process (group) id, for logs and for tests that kill it."""
        proc = self.server.proc if self.server is not None else None
        return proc.pid if proc is not None else None

    def failure_reason(self) -> str:
        if self.server is None:
            return "endpoint unavailable"
        proc = self.server.proc
        code = proc.poll() if proc is not None else None
        reason = self.server.failure_reason()
        return f"exit code {code}; last log line: {reason}" if code is not None else reason

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
                            ignore_eos=eng.pin_output_length, ca_file=eng.ca_file, verify_tls=eng.verify_tls)

    def count_tokens(self) -> Callable[[str], int] | None:
        tok = self.tokenizer
        if tok is None:
            return None
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)

    def prompt_factory(self) -> PromptFactory:
        """Exact-length prompts from the served model's own tokenizer (built once per engine).

        A model dir without a local tokenizer.json (e.g. a hub id) falls back to the catalog
        twin's word vocabulary; its prompt lengths are then only as exact as the server's usage.
        """
        if self._factory is None:
            from bench.config.catalog import load_models

            vocab = load_models()[self.spec.model].hp.vocab_size if self.spec.model in load_models() else 2048
            self._factory = PromptFactory.for_model_dir(self.model_path) or PromptFactory.for_vocab_size(vocab)
        return self._factory


class GroupSession:
    """One server spec's engine, started once and shared by every point measured through it.

    The sweep measures a group's points in order; `tune` asks for points one at a time as its
    search goes. The engine starts on the first point, is restarted before a point when it died
    in an earlier one, and a failed start fails every later point of the group with the engine's
    reason: it is not retried, because the same spec on the same hardware fails the same way.
    """

    def __init__(self, sweep: Sweep, spec: ServerSpec, sink: RunStore, rate: float, on_gpu: bool,
                 emit: ProgressFn, expected_points: int | None = None) -> None:
        self.sweep, self.spec, self.sink, self.rate, self.on_gpu, self.emit = sweep, spec, sink, rate, on_gpu, emit
        self.expected_points = expected_points
        self.engine: _Engine | None = None
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
        if self.sweep.engine.kind == "vllm":
            self.stats.server_starts += 1
        server = self.engine.server
        self.emit({"type": "server_ready", "server_hash": self.spec.server_hash, "pid": self.engine.pid,
                   "restart": restart, "startup_s": server.startup_s if server is not None else 0.0})

    def _ensure_engine(self) -> None:
        if self.engine is None:
            self.emit({"type": "server_starting", "server": self.spec.model_dump(),
                       "server_hash": self.spec.server_hash, "points": self.expected_points})
            self.engine = _Engine(self.sweep, self.spec, self.sink, self.on_gpu)
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
            row = _base_row(self.sweep, point, idx, self.sink.run_id, self.rate, self.on_gpu)
            row.update({"status": "failed", "error": self.start_error})
            self.sink.write_point(row)
            self.stats.points_failed += 1
            self.emit({"type": "point_done", "row": row, "skipped_requests": point.load.num_requests})
            return row
        assert self.engine is not None
        measure = _measure_offline_point if self.sweep.engine.kind == "vllm-offline" else _measure_point
        row = measure(self.sweep, point, idx, self.engine, self.sink, self.rate, self.on_gpu, self.emit)
        self.stats.measured_s += row.get("duration_s") or 0.0
        if row["status"] != "ok":
            self.stats.points_failed += 1
        self.emit({"type": "point_done", "row": row})
        return row


def run_group(sweep: Sweep, group: Group, sink: RunStore, rate: float, on_gpu: bool,
              emit: ProgressFn) -> GroupStats:
    """Measure all points of one server group (same ServerSpec) on one engine start."""
    spec = group[0][1].server
    with GroupSession(sweep, spec, sink, rate, on_gpu, emit, expected_points=len(group)) as session:
        for idx, point in group:
            session.measure(idx, point)
    return session.stats


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
    # Endless request streams; the load generator takes warm-up, measured (count or duration) and cool-down.
    measured = iter_requests(point.workload, factory, seed_offset=idx)
    warm = iter_requests(point.workload, factory, seed_offset=10_000 + idx)
    cool = iter_requests(point.workload, factory, seed_offset=20_000 + idx)
    emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
    sampler = GpuSampler(device_indices=_gpu_indices(point.gpu_count)) if on_gpu and sweep.engine.kind == "vllm" \
        else None
    probe = _ServerProbe()
    try:
        cfg = engine.client_config(point)
        probe.base_url = cfg.base_url
        if sampler is not None:
            sampler.start()
        result = run_async(_drive(cfg, engine.count_tokens(), warm, measured, point, emit, cool, probe))
    except UserInputError:
        raise
    except Exception as e:  # a harness fault must not end the sweep
        row.update({"status": "failed", "error": f"{type(e).__name__}: {e}"})
        store.write_point(row)
        return row
    finally:
        telemetry = sampler.stop() if sampler is not None else unavailable(
            "not measured: no NVIDIA GPU" if not on_gpu else "not measured: external endpoint")
    slo = SloThresholds(sweep.slo.ttft_ms, sweep.slo.tpot_ms, sweep.slo.e2el_ms)
    row.update(summarize(result.records, gpu_count=point.gpu_count, slo=slo))
    row.update(result.columns())
    row.update(telemetry_columns(telemetry, row))
    row.update(probe.columns())
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    row.update(cost_columns(row))
    errors = [r.error for r in result.records if r.measured and r.error]
    if row["completed"] == row["num_requests"]:
        row["status"] = "ok"
    else:
        died = not engine.alive()
        reason = f"server died: {engine.failure_reason()}" if died else (errors[0] if errors else "unknown")
        row["status"] = "failed" if row["completed"] == 0 or died else "partial"
        row["error"] = f"{len(errors)} of {row['num_requests']} requests failed; first: {reason}"
    store.write_point(row, requests_frame(result.records, point.point_id))
    return row


def _measure_offline_point(sweep: Sweep, point: Point, idx: int, engine: _Engine, store: RunStore, rate: float,
                           on_gpu: bool, emit: ProgressFn) -> dict[str, Any]:
    """One offline batch: LLM.generate on num_requests prompts (after the warm-up batch) in a child process."""
    from bench.engines.vllm_offline import run_offline
    from bench.measure.metrics import offline_summary

    row = _base_row(sweep, point, idx, store.run_id, rate, on_gpu)
    row["started_at"] = datetime.now(timezone.utc).isoformat()
    lp, factory = point.load, engine.prompt_factory()
    emit({"type": "point_start", "index": idx, "point": point, "requests": lp.num_requests})
    reqs = list(itertools.islice(iter_requests(point.workload, factory, seed_offset=idx), lp.num_requests))
    warm = list(itertools.islice(iter_requests(point.workload, factory, seed_offset=10_000 + idx),
                                 lp.warmup_requests))
    try:
        res = run_offline(point.server, engine.model_path, sweep.engine, [r.prompt or "" for r in reqs],
                          [r.prompt or "" for r in warm], point.workload.output_len,
                          store.log_path(point.server_hash), not on_gpu, lp.timeout_s)
    except EngineStartError as e:
        row.update({"status": "failed", "error": str(e)})
        store.write_point(row)
        return row
    row.update(offline_summary(res.elapsed_s, res.num_prompts, res.completed, res.input_tokens, res.output_tokens,
                               gpu_count=point.gpu_count))
    row.update({"load_mode": "offline", "client_kept_up": None,
                "telemetry_available": False, "telemetry_reason": "not measured: offline mode"})
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    row.update(cost_columns(row))
    row["status"] = "ok" if res.completed == res.num_prompts else "partial"
    if row["status"] != "ok":
        row["error"] = f"{res.num_prompts - res.completed} of {res.num_prompts} prompts did not finish"
    for _ in range(lp.num_requests):
        emit({"type": "request_done", "ok": True})
    store.write_point(row)
    return row


async def _drive(cfg: ClientConfig, count: Callable[[str], int] | None, warm: Any, measured: Any,
                 point: Point, emit: ProgressFn, cool: Any = None, probe: _ServerProbe | None = None) -> LoadResult:
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
                         "num_preemptions", "spec_decode_acceptance_rate", "spec_decode_mean_acceptance_len",
                         "server_prompt_tokens", "server_generation_tokens")


class _ServerProbe:
    """Scrapes the server's /metrics before the point's load starts and when its measured phase ends.

    Never during the measured phase: rendering /metrics blocks vLLM's API-server event loop (100+ ms
    on a busy CPU box), which would hold back the stream chunks being measured. The end scrape runs
    once the last measured request is done, while the cool-down load is still on, so gauges such as
    KV-cache usage describe the loaded server, not an idle one. Counters are differenced
    (bench.measure.telemetry), so they also count the warm-up's requests.
    """

    def __init__(self) -> None:
        self.base_url: str | None = None
        self.texts: dict[str, str | None] = {}

    async def scrape(self, name: str) -> None:
        if self.base_url is None:
            return
        import aiohttp

        from bench.measure.telemetry import fetch_metrics

        async with aiohttp.ClientSession() as session:
            self.texts[name] = await fetch_metrics(self.base_url, session)

    async def on_phase(self, name: str) -> None:
        if name == "measure_end":
            await self.scrape("after")

    def columns(self) -> dict[str, Any]:
        from bench.measure.telemetry import scrape_prometheus, vllm_metric_deltas

        before, after = self.texts.get("before"), self.texts.get("after")
        if before is None or after is None:
            return {**dict.fromkeys(SERVER_METRIC_COLUMNS), "server_metrics_available": False}
        d = vllm_metric_deltas(scrape_prometheus(before), scrape_prometheus(after))
        d["server_prompt_tokens"] = d.pop("prompt_tokens")
        d["server_generation_tokens"] = d.pop("generation_tokens")
        return {**{k: d.get(k) for k in SERVER_METRIC_COLUMNS}, "server_metrics_available": True}


def _gpu_indices(count: int) -> list[int]:
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
            "cooldown": r.cooldown, "cancelled": r.cancelled,
            "num_chunks": len(r.chunk_ns), "coalesced_chunks": r.coalesced_chunks, "itl_ms": r.itl_ms,
            "chunk_ns": list(r.chunk_ns),
        })
    return pd.DataFrame(rows)
