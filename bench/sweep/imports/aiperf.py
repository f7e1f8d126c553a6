"""AIPerf's `profile_export_aiperf.json` (aiperf profile; read against aiperf 0.13.0, export schema_version
1.4). One file = one point; each metric is `{unit, avg, p50, p90, p95, p99, ...}`.

Field meanings (aiperf 0.13.0 metric definitions):
- `time_to_first_token`, `request_latency`: TTFT and E2EL per request (ms): ours;
- `inter_token_latency` = (request_latency - TTFT) / (output_sequence_length - 1) per request: our TPOT;
- `inter_chunk_latency`: every gap between streamed chunks: our ITL;
- output tokens: AIPerf counts them with its own tokenizer over the streamed text (client side);
  `output_token_throughput` and `total_output_tokens` use that count, so the imported `output_tokens`,
  `output_tok_s` and the TPOT denominator are the client's, and the row says so (`output_token_counter:
  client`). The server's usage totals (`total_usage_completion_tokens`) are not used for the throughput.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.sweep.imports.base import (
    Parsed,
    check_version,
    drop_none,
    fail,
    integer,
    number,
    require_output_tokens,
    text,
)
from bench.units import ns_to_ms, s_to_ms

TOOL = "aiperf"
KNOWN_VERSIONS = ("0.13.0",)  # profile_export_aiperf.json schema_version 1.4 (2026-12)
_LATENCY = {"time_to_first_token": "ttft", "inter_token_latency": "tpot", "inter_chunk_latency": "itl",
            "request_latency": "e2el"}
_STATS = {"avg": "mean", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}
_TO_MS = {"ms": 1.0, "sec": s_to_ms(1.0), "s": s_to_ms(1.0), "ns": ns_to_ms(1.0)}


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and ("aiperf_version" in doc or (
        "time_to_first_token" in doc and "output_token_throughput" in doc and "input_config" in doc))


def _ms(doc: dict[str, Any], metric: str, stat: str, path: Path) -> float | None:
    v = number(doc, metric, stat)
    if v is None:
        return None
    unit = text(doc, metric, "unit") or "ms"
    if unit not in _TO_MS:
        raise fail(path, f"{metric}: unit {unit!r} is not a time unit this importer knows ({', '.join(_TO_MS)})")
    return v * _TO_MS[unit]


def parse(doc: Any, path: Path) -> Parsed:
    if not isinstance(doc, dict):
        raise fail(path, "not an AIPerf profile export (expected a JSON object)")
    version = text(doc, "aiperf_version")
    note = check_version(path, TOOL, version, KNOWN_VERSIONS)
    cfg = doc.get("input_config") if isinstance(doc.get("input_config"), dict) else {}
    models = (cfg.get("models") or {}).get("items") if isinstance(cfg.get("models"), dict) else None
    model = models[0].get("name") if isinstance(models, list) and models and isinstance(models[0], dict) else None
    endpoint = text(cfg, "endpoint", "type")
    phases = cfg.get("phases") if isinstance(cfg.get("phases"), list) else []
    conc = next((integer(p, "concurrency") for p in phases if integer(p, "concurrency")), None)
    rate = next((number(p, "request_rate") for p in phases if number(p, "request_rate")), None)
    completed = integer(doc, "completed_request_count", "avg")
    total = integer(doc, "request_count", "avg")
    errors = doc.get("error_summary")
    failed = sum(int(e.get("count", 0)) for e in errors if isinstance(e, dict)) if isinstance(errors, list) else None
    point: dict[str, Any] = {
        "model": str(model) if model is not None else None,
        "endpoint": ("chat" if "chat" in endpoint else "completions") if endpoint else None,
        "num_requests": total, "completed": completed if completed is not None else total, "failed": failed,
        "duration_s": number(doc, "benchmark_duration", "avg"),
        "input_tokens": integer(doc, "total_isl", "avg"), "output_tokens": integer(doc, "total_output_tokens", "avg"),
        "client_output_tokens": integer(doc, "total_output_tokens", "avg"),
        "request_throughput": number(doc, "request_throughput", "avg"),
        "input_tok_s": number(doc, "input_token_throughput", "avg"),
        "output_tok_s": number(doc, "output_token_throughput", "avg"),
        "total_tok_s": number(doc, "total_token_throughput", "avg"),
        "concurrency": conc, "request_rate": rate,
        "load_mode": "rate" if rate else ("concurrency" if conc else None),
    }
    for metric, ours in _LATENCY.items():
        for theirs, stat in _STATS.items():
            point[f"{ours}_ms_{stat}"] = _ms(doc, metric, theirs, path)
    point = drop_none(point)
    require_output_tokens(path, point, "the result")
    return Parsed(TOOL, version, [point], "client", [note] if note else [])
