"""llm-d Benchmark Report v0.2.x (JSON or YAML), as llm-d-benchmark and inference-perf write it: one report =
one point; a list of reports is read report by report. Schema: llm-d/llm-d-benchmark
llmdbenchmark/analysis/benchmark_report/br_v0_2_1_json_schema.json (commit 3b7decff5fe8, 2026-12), vendored in
tests/fixtures/imports/llm-d/ (the export test validates against it).

Mapping (results.request_performance.aggregate): `latency.time_to_first_token` -> ttft; `time_per_output_token`
(TPOT excluding the first token) -> tpot; `inter_token_latency` -> itl; `request_latency` -> e2el, each
`Statistics` converted from its `units` (s, ms, s/token, ms/token) to ms; `normalized_time_per_output_token`
(includes the first token) is not ours and is left out. `throughput.*_token_rate.mean` -> tok/s,
`request_rate.mean` -> req/s; `requests.total/failures/incomplete` -> counts. The GPUs are the sum of
`accelerator.count` ("total utilized accelerator count") over the stack's inference engines; the model,
engine and tensor parallelism come from the first one. The report states no token totals: those stay empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.sweep.imports.base import (
    Parsed,
    check_version,
    drop_none,
    fail,
    first_object,
    integer,
    number,
    objects,
    read_points,
    require_output_tokens,
    text,
)
from bench.units import MS_PER_S

TOOL = "llm-d"
KNOWN_VERSIONS = ("0.2.1",)
_LATENCY = {"time_to_first_token": "ttft", "time_per_output_token": "tpot", "inter_token_latency": "itl",
            "request_latency": "e2el"}
_STATS = {"mean": "mean", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}
_TO_MS = {"ms": 1.0, "ms/token": 1.0, "s": MS_PER_S, "s/token": MS_PER_S}
_RATES = {"output_token_rate": ("output_tok_s", "tokens/s"), "total_token_rate": ("total_tok_s", "tokens/s"),
          "input_token_rate": ("input_tok_s", "tokens/s"), "request_rate": ("request_throughput", "queries/s")}
_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


def matches(doc: Any) -> bool:
    first = first_object(doc)
    return isinstance(first, dict) and isinstance(first.get("run"), dict) and isinstance(first.get("results"), dict)


def duration_s(iso: str | None) -> float | None:
    """Seconds of an ISO-8601 duration of the form the reports use (PT1H2M3.5S); None for any other form."""
    m = _DURATION.match(iso.strip()) if iso else None
    if not m or not any(m.groups()):
        return None
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600.0 + mi * 60.0 + s


def _engines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    stack = (doc.get("scenario") or {}).get("stack") if isinstance(doc.get("scenario"), dict) else None
    return [c["standardized"] for c in stack or [] if isinstance(c, dict) and isinstance(c.get("standardized"), dict)
            and c["standardized"].get("kind") == "inference_engine"]


def _point(doc: Any, path: Path, where: str, notes: list[str]) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise fail(path, f"{where}: not an llm-d benchmark report (no results)")
    version = text(doc, "version")
    note = check_version(path, TOOL, version, KNOWN_VERSIONS)
    if note and note not in notes:
        notes.append(note)
    agg = ((doc["results"].get("request_performance") or {}).get("aggregate") or {}) \
        if isinstance(doc["results"].get("request_performance"), dict) else {}
    if not agg:
        raise fail(path, f"{where}: no results.request_performance.aggregate (nothing to price)")
    point: dict[str, Any] = {}
    lat = agg.get("latency") if isinstance(agg.get("latency"), dict) else {}
    for theirs, ours in _LATENCY.items():
        stats = lat.get(theirs)
        if not isinstance(stats, dict):
            continue
        unit = stats.get("units")
        if unit not in _TO_MS:
            raise fail(path, f"{where}: latency.{theirs}.units {unit!r} is not a time unit ({', '.join(_TO_MS)})")
        for s_theirs, s_ours in _STATS.items():
            v = number(stats, s_theirs)
            if v is not None:
                point[f"{ours}_ms_{s_ours}"] = v * _TO_MS[unit]
    thr = agg.get("throughput") if isinstance(agg.get("throughput"), dict) else {}
    for theirs, (ours, unit) in _RATES.items():
        stats = thr.get(theirs)
        if isinstance(stats, dict) and number(stats, "mean") is not None:
            if stats.get("units") != unit:
                raise fail(path, f"{where}: throughput.{theirs}.units {stats.get('units')!r}, expected {unit!r}")
            point[ours] = number(stats, "mean")
    req = agg.get("requests") if isinstance(agg.get("requests"), dict) else {}
    total, failures, incomplete = integer(req, "total"), integer(req, "failures"), integer(req, "incomplete")
    point.update({"num_requests": total, "failed": failures,
                  "completed": total - (failures or 0) - (incomplete or 0) if total is not None else None})
    engines = _engines(doc)
    if engines:
        first = engines[0]
        gpus = [integer(e, "accelerator", "count") for e in engines]
        point.update({"model": text(first, "model", "name"), "engine": text(first, "tool"),
                      "tensor_parallel_size": integer(first, "accelerator", "parallelism", "tp"),
                      "gpu_count": sum(g for g in gpus if g) or None})
        ep = integer(first, "accelerator", "parallelism", "ep")
        point["expert_parallel"] = ep > 1 if ep else None
    load = ((doc.get("scenario") or {}).get("load") or {}).get("standardized") \
        if isinstance(doc.get("scenario"), dict) and isinstance(doc["scenario"].get("load"), dict) else None
    if isinstance(load, dict):
        rate, conc = number(load, "rate_qps"), number(load, "concurrency")
        point.update({"input_len": integer(load, "input_seq_len", "value"),
                      "output_len": integer(load, "output_seq_len", "value"),
                      "request_rate": rate, "concurrency": int(conc) if conc and conc == int(conc) else None,
                      "load_mode": "rate" if rate else ("concurrency" if conc else None)})
    run = doc.get("run") if isinstance(doc.get("run"), dict) else {}
    point.update({"started_at": text(run, "time", "start"), "finished_at": text(run, "time", "end"),
                  "duration_s": duration_s(text(run, "time", "duration"))})
    point = drop_none(point)
    require_output_tokens(path, point, where)
    return point


def parse(doc: Any, path: Path) -> Parsed:
    points, notes = read_points(doc, path, "llm-d", "report", _point)
    versions = sorted({v for d in objects(doc) if (v := text(d, "version"))})
    return Parsed(TOOL, ",".join(versions) or None, points, None, notes)
