"""A run's points as llm-d Benchmark Reports v0.2.1 (`maas-bench export --format llm-d`): one report per point.

Schema: llm-d/llm-d-benchmark llmdbenchmark/analysis/benchmark_report/br_v0_2_1_json_schema.json (commit
3b7decff5fe8, 2026-12; vendored in tests/fixtures/imports/llm-d/, where a test validates every export).
The mapping is `bench.sweep.imports.llmd`'s read backwards: ttft/tpot/itl/e2el percentiles as `Statistics`
in ms (ms/token for TPOT and ITL), throughputs in tokens/s and queries/s, the engine and accelerators as one
`inference_engine` stack component, the workload as the load. A figure a row lacks is left out of the report,
never filled; a failed point becomes a report with no request performance.
"""

from __future__ import annotations

import math
from typing import Any

from bench import __version__

SCHEMA_VERSION = "0.2.1"
_LATENCY = {"ttft": ("time_to_first_token", "ms"), "tpot": ("time_per_output_token", "ms/token"),
            "itl": ("inter_token_latency", "ms/token"), "e2el": ("request_latency", "ms")}
_STATS = {"mean": "mean", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}
_RATES = {"input_tok_s": ("input_token_rate", "tokens/s"), "output_tok_s": ("output_token_rate", "tokens/s"),
          "total_tok_s": ("total_token_rate", "tokens/s"), "request_throughput": ("request_rate", "queries/s")}
_DISTRIBUTION = {"fixed": "fixed", "ranged": "uniform"}
_SOURCE = {"fixed": "random", "ranged": "random", "prefix": "random", "chat": "sampled", "trace": "sampled",
           "mooncake": "sampled", "multiturn": "sampled"}


def _v(row: dict[str, Any], key: str) -> Any:
    """The row's value, None for null/NaN (pandas spells null as NaN)."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _stats(row: dict[str, Any], metric: str, unit: str) -> dict[str, Any] | None:
    mean = _v(row, f"{metric}_ms_mean")
    if mean is None:
        return None
    out: dict[str, Any] = {"units": unit, "mean": float(mean)}
    for ours, theirs in _STATS.items():
        v = _v(row, f"{metric}_ms_{ours}")
        if v is not None and ours != "mean":
            out[theirs] = float(v)
    return out


def _seq(value: Any, kind: Any) -> dict[str, Any]:
    return {"distribution": _DISTRIBUTION.get(kind, "other"), "value": int(value)}


def _stack(row: dict[str, Any], env: dict[str, Any]) -> list[dict[str, Any]] | None:
    model = _v(row, "model")
    if model is None:
        return None
    tp = _v(row, "tensor_parallel_size") or 1
    count = _v(row, "gpu_count") or tp
    engine = _v(row, "engine") or "unknown"
    # the engine's version is known for a measured run (env.json); an imported row names only its client tool's
    version = env.get("vllm") if engine in ("vllm", "vllm-offline") and _v(row, "source") != "imported" else None
    args = {k: _v(row, k) for k in ("quantization", "dtype", "kv_cache_dtype", "max_model_len", "max_num_seqs",
                                    "max_num_batched_tokens", "enable_prefix_caching", "spec_method")
            if _v(row, k) is not None}
    return [{
        "metadata": {"label": f"{engine}-0", "cfg_id": str(_v(row, "server_hash") or _v(row, "point_id"))},
        "standardized": {
            "kind": "inference_engine", "tool": str(engine), "tool_version": str(version or "unknown"),
            "role": "replica", "replicas": 1, "model": {"name": str(model)},
            "accelerator": {"model": str(_v(row, "gpu_type") or "unknown"), "count": int(count),
                            "parallelism": {"tp": int(tp), "ep": int(tp) if _v(row, "expert_parallel") else 1}},
        },
        "native": {"args": args},
    }]


def _load(row: dict[str, Any]) -> dict[str, Any] | None:
    input_len = _v(row, "input_len")
    if input_len is None:
        return None
    kind = _v(row, "workload_kind")
    imported = _v(row, "source") == "imported"
    std: dict[str, Any] = {
        "tool": str(_v(row, "import_tool")) if imported else "maas-bench",
        "tool_version": str(_v(row, "import_tool_version") or "unknown") if imported else __version__,
        "source": _SOURCE.get(kind, "unknown"), "input_seq_len": _seq(input_len, kind),
    }
    if _v(row, "output_len") is not None:
        std["output_seq_len"] = _seq(_v(row, "output_len"), kind)
    if _v(row, "request_rate"):
        std["rate_qps"] = float(_v(row, "request_rate"))
    if _v(row, "concurrency"):
        std["concurrency"] = int(_v(row, "concurrency"))
    native = {k: _v(row, k) for k in ("workload", "workload_kind", "endpoint", "load_mode", "num_requests",
                                      "warmup_requests") if _v(row, k) is not None}
    return {"metadata": {"cfg_id": str(_v(row, "point_id"))}, "standardized": std, "native": {"args": native}}


def _duration(seconds: Any) -> str | None:
    return f"PT{float(seconds):.6f}S" if seconds is not None else None


def _performance(row: dict[str, Any]) -> dict[str, Any] | None:
    if _v(row, "status") == "failed" or _v(row, "num_requests") is None and _v(row, "output_tok_s") is None:
        return None
    requests: dict[str, Any] = {"total": int(_v(row, "num_requests") or 0)}
    if _v(row, "failed") is not None:
        requests["failures"] = int(_v(row, "failed"))
    done = _v(row, "completed")
    for ours, theirs in (("input_tokens", "input_length"), ("output_tokens", "output_length")):
        if done and _v(row, ours) is not None:
            requests[theirs] = {"units": "count", "mean": _v(row, ours) / done}
    latency = {theirs: s for m, (theirs, unit) in _LATENCY.items() if (s := _stats(row, m, unit)) is not None}
    throughput = {theirs: {"units": unit, "mean": float(_v(row, ours))}
                  for ours, (theirs, unit) in _RATES.items() if _v(row, ours) is not None}
    return {"aggregate": {"requests": requests, "latency": latency or None, "throughput": throughput or None}}


def report(row: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """One point (a points row) as an llm-d Benchmark Report v0.2.1 document."""
    time = {k: v for k, v in (("start", _v(row, "started_at")), ("end", _v(row, "finished_at")),
                              ("duration", _duration(_v(row, "duration_s")))) if v is not None}
    source = _v(row, "source") or "measured"
    run = {"uid": str(_v(row, "point_id")), "eid": str(_v(row, "run_id")),
           "description": f"maas-bench {source} point {_v(row, 'point_index')} of run {_v(row, 'run_id')}",
           "keywords": ["maas-bench", str(source)]}
    if time:
        run["time"] = time
    scenario = {k: v for k, v in (("stack", _stack(row, env)), ("load", _load(row))) if v is not None}
    doc: dict[str, Any] = {"version": SCHEMA_VERSION, "run": run}
    if scenario:
        doc["scenario"] = scenario
    perf = _performance(row)
    doc["results"] = {"request_performance": perf} if perf else {}
    return doc
