"""GuideLLM's `benchmarks.json` (guidellm run --output kind=json; read against guidellm 0.8.1, report format
`metadata.version` 2). Each entry of `benchmarks` (one per strategy of a sweep) = one point.

Field meanings (guidellm 0.8.1 schemas/base/request_stats.py and benchmark/schemas/metrics.py):
- `time_to_first_token_ms`: TTFT per request: ours;
- `inter_token_latency_ms` = (last token - first token) / (output tokens - 1) per request: OUR TPOT (ours is
  (E2EL - TTFT) / (output tokens - 1), the same interval when the last token ends the request). GuideLLM
  weights each request by its (output tokens - 1) when it builds this distribution's percentiles: with a
  fixed output length the percentiles are per request, as ours; with varying lengths they lean to long
  requests. Imported as tpot_ms as it is; the weighting is the tool's;
- `time_per_output_token_ms` = (last token - request start) / output tokens: INCLUDES the TTFT. It is not our
  TPOT and cannot be converted from its percentiles (that needs each request's TTFT): left out;
- GuideLLM keeps no gap-by-gap inter-token distribution: itl_ms stays empty;
- `request_latency` (seconds) -> e2el_ms;
- throughputs: the tool's headline (its console's "Server Throughput" table) is the `total` status mean of
  `requests_per_second`, `prompt_tokens_per_second`, `output_tokens_per_second`, `tokens_per_second`;
  latencies are the `successful` status, as its latency table;
- output tokens come from the server's usage block when `prefer_response_metrics` is on (the default), else
  from GuideLLM's tokenizer: `output_token_counter` says which.
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
from bench.units import s_to_ms

TOOL = "guidellm"
KNOWN_VERSIONS = ("0.8.1",)
_PCTS = {"p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list) and (
        "guidellm_version" in (doc.get("metadata") or {}) or any(
            isinstance(b, dict) and b.get("type_") == "generative_benchmark" for b in doc["benchmarks"]))


def _latency(metrics: dict[str, Any], theirs: str, ours: str, scale: float) -> dict[str, float | None]:
    s = (metrics.get(theirs) or {}).get("successful") if isinstance(metrics.get(theirs), dict) else None
    if not isinstance(s, dict):
        return {}
    out = {f"{ours}_ms_mean": number(s, "mean"), f"{ours}_ms_p50": number(s, "median")}
    for theirs_p, ours_p in _PCTS.items():
        if out.get(f"{ours}_ms_{ours_p}") is None:
            out[f"{ours}_ms_{ours_p}"] = number(s, "percentiles", theirs_p)
    return {k: v * scale if v is not None else None for k, v in out.items()}


def _point(b: Any, doc: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(b, dict) or not isinstance(b.get("metrics"), dict):
        raise fail(path, f"{where}: no metrics")
    m = b["metrics"]
    strategy = (b.get("config") or {}).get("strategy") if isinstance(b.get("config"), dict) else None
    strategy = strategy if isinstance(strategy, dict) else {}
    kind = strategy.get("type_")
    conc = integer(strategy, "streams") or integer(strategy, "max_concurrency")
    if kind == "synchronous":
        conc = 1
    rate = number(strategy, "rate") if kind in ("constant", "poisson", "async") else None
    backend = (((doc.get("config") or {}).get("spec") or {}).get("backend") or {}) \
        if isinstance(doc.get("config"), dict) else {}
    fmt = text(backend, "request_format") or ""
    point: dict[str, Any] = {
        "model": text(backend, "model") or None,
        "endpoint": ("chat" if "chat" in fmt else "completions") if fmt else None,
        "num_requests": integer(m, "request_totals", "total"), "completed": integer(m, "request_totals", "successful"),
        "failed": integer(m, "request_totals", "errored"), "duration_s": number(b, "duration"),
        "input_tokens": integer(m, "prompt_token_count", "successful", "total_sum"),
        "output_tokens": integer(m, "output_token_count", "successful", "total_sum"),
        "request_throughput": number(m, "requests_per_second", "total", "mean"),
        "input_tok_s": number(m, "prompt_tokens_per_second", "total", "mean"),
        "output_tok_s": number(m, "output_tokens_per_second", "total", "mean"),
        "total_tok_s": number(m, "tokens_per_second", "total", "mean"),
        "concurrency": conc if kind in ("concurrent", "synchronous") else None, "request_rate": rate,
        "load_mode": "concurrency" if kind in ("concurrent", "synchronous") else ("rate" if rate else None),
        **_latency(m, "time_to_first_token_ms", "ttft", 1.0),
        **_latency(m, "inter_token_latency_ms", "tpot", 1.0),
        **_latency(m, "request_latency", "e2el", s_to_ms(1.0)),
    }
    point = drop_none(point)
    require_output_tokens(path, point, where)
    return point


def parse(doc: Any, path: Path) -> Parsed:
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise fail(path, "not a GuideLLM benchmarks report (no benchmarks list)")
    version = text(doc, "metadata", "guidellm_version")
    note = check_version(path, TOOL, version, KNOWN_VERSIONS)
    benches = doc["benchmarks"]
    if not benches:
        raise fail(path, "the report holds no benchmarks")
    points = [_point(b, doc, path, f"benchmarks[{i}]") for i, b in enumerate(benches)]
    prefer = [((b.get("config") or {}).get("prefer_response_metrics")) for b in benches if isinstance(b, dict)]
    counter = "client" if any(p is False for p in prefer) else "server"
    notes = [note] if note else []
    notes.append("guidellm: time_per_output_token_ms includes TTFT and is not imported; tpot_ms is its "
                 "inter_token_latency_ms (weighted by output tokens - 1); itl_ms stays empty")
    return Parsed(TOOL, version, points, counter, notes)
