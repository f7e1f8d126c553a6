"""THE points schema: every column of a points row, its type, unit and meaning.

Why one declared list: a row is assembled from several sources (the point's config in
`session.base_row`, `measure.metrics.summarize`, `LoadResult.columns`, the energy and /metrics
probes, the cost columns). Without a declaration they drift apart silently: a column that a
reader expects is simply never written. `RunStore.write_point` checks every row against this
list (an unknown column or a wrong type is an error; a missing column is written as null), and
the column table of the docs page docs/results-schema.md is rendered from it (`python -m
bench.sweep.rows` rewrites it; a unit test checks that they agree).

Every column may be null: a failed point has only its config, an offline batch has no latencies,
and a probe that could not measure leaves its columns empty.
"""

from __future__ import annotations

import numbers
import re
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

Dtype = Literal["str", "int", "float", "bool"]


class Column(NamedTuple):
    name: str
    dtype: Dtype
    unit: str  # "" = a label or a count without a unit
    doc: str


class RowSchemaError(ValueError):
    """A row does not match the declared schema: a harness bug, never a user error."""


_PCT_DOC = {
    "ttft_ms": "time to first token: first content-bearing chunk minus request send",
    "tpot_ms": "time per output token: (E2EL - TTFT) / (output tokens - 1), per request",
    "itl_ms": "inter-token latency: every gap between consecutive content-bearing chunks",
    "e2el_ms": "end-to-end latency: last content-bearing chunk minus request send",
}
_STATS = (("mean", "mean"), ("p50", "50th percentile"), ("p90", "90th percentile"),
          ("p95", "95th percentile"), ("p99", "99th percentile"))


def _table(text: str) -> list[Column]:
    """Columns from a text table, one `name | dtype | unit | meaning` row a line (an empty unit: none).

    Why a table: a hundred-odd declarations read as the docs table they become, not as a hundred
    constructor calls. A line without `|` continues the meaning of the row above; `#` lines are
    section comments.
    """
    cols: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "|" not in line:
            cols[-1][3] += " " + line
            continue
        cells = [cell.strip() for cell in line.split("|", 3)]
        if len(cells) != 4 or cells[1] not in get_args(Dtype):  # pragma: no cover - a bug in this file
            raise RuntimeError(f"bench.sweep.rows: bad column row {line!r}")
        cols.append(cells)
    return [Column(name, dtype, unit, doc) for name, dtype, unit, doc in cols]  # type: ignore[arg-type]


def _latency_columns() -> list[Column]:
    return [Column(f"{m}_{s}", "float", "ms", f"{label} of {doc}")
            for m, doc in _PCT_DOC.items() for s, label in _STATS]


_CI_NULL = "null below 10 measured requests (too few to resample or to fill 10 batches) and for offline points"
_RATE_UNITS = {"output_tok_s": "tok/s", "total_tok_s": "tok/s", "request_throughput": "req/s"}


def _ci_columns(figures: list[tuple[str, str, str]]) -> list[Column]:
    """`<figure>_ci_lo` / `_ci_hi` of (figure, unit, method): the 95% confidence interval (measure.intervals)."""
    return [Column(f"{f}_ci_{end}", "float", unit,
                   f"{word} end of the 95% confidence interval of {f}: {how}; {_CI_NULL}")
            for f, unit, how in figures for end, word in (("lo", "lower"), ("hi", "upper"))]


def _rate_ci_columns() -> list[Column]:
    how = "batch means (the window split into 10 equal batches, Student's t on the batch rates)"
    return _ci_columns([(f, unit, how) for f, unit in _RATE_UNITS.items()])


def _latency_ci_columns() -> list[Column]:
    how = "percentile bootstrap over the completed requests (fixed seed, 200-1000 resamples)"
    return _ci_columns([(f"{m}_p{p}", "ms", how) for m in ("ttft_ms", "tpot_ms", "e2el_ms") for p in (50, 90, 99)])


COLUMNS: tuple[Column, ...] = (
    *_table("""
    # identity and outcome
    run_id | str | | run directory name
    point_id | str | | hash of the resolved point (server, workload, load); resume key
    point_index | int | | position of the point in the sweep's expansion
    server_hash | str | | hash of the server spec; points sharing it share one engine start
    status | str | | ok, partial (some requests failed) or failed
    error | str | | why the point failed or was partial
    # provenance (bench.sweep.imports writes these for imported rows; see row_source for older rows)
    source | str | | measured (a maas-bench run on a real engine), imported (another tool's result file, `maas-bench
        import`) or virtual (the planner's simulated engine); null in rows written before this column: row_source
    import_tool | str | | imported rows: the tool that wrote the file (vllm, guidellm, aiperf, inferencex, llm-d)
    import_tool_version | str | | imported rows: the tool's version as the file states it (null when it states none)
    import_file_sha256 | str | | imported rows: SHA-256 of the imported file's bytes
    output_token_counter | str | | who counted output_tokens: server (the usage block) or client (the tool's own
        tokenizer over the streamed text); null when the file does not say
    # server config
    model | str | | catalog model id or model directory
    engine | str | | engine kind: vllm, vllm-offline or openai
    dtype | str | | weight/activation dtype of the server
    quantization | str | | quantization method (none = unquantized)
    kv_cache_dtype | str | | KV-cache dtype
    max_model_len | int | tok | context length the server was started with
    max_num_seqs | int | | vLLM's cap on sequences batched at once
    max_num_batched_tokens | int | tok | vLLM's cap on tokens per scheduler step (null = default)
    enable_prefix_caching | bool | | automatic prefix caching on
    prefix_cache_between_points | str | | reset (the prefix cache is emptied before each point) or keep
    tensor_parallel_size | int | | tensor-parallel GPUs per server
    expert_parallel | bool | | experts sharded across the tensor-parallel GPUs (MoE)
    spec_method | str | | speculative decoding method: mtp, eagle3, ngram, draft_model (null = off)
    spec_num_speculative_tokens | int | tok | K: draft tokens per verification step (0 = no speculation)
    spec_pinned_acceptance_length | float | tok | acceptance length pinned by synthetic rejection sampling (null: the
        weights decide)
    spec_pinned_acceptance_rates | str | frac | JSON list of pinned per-position acceptance rates
    disagg | str | | prefill/decode disaggregation: xPyD and the KV connector (`1P1D ExampleConnector`), or the
        same servers aggregated behind the proxy (`2 servers aggregated`); null = one server (bench.engines.disagg)
    # hardware and price
    device | str | | gpu or cpu: where the engine ran
    gpu_type | str | | hardware id from configs/hardware.yaml
    gpu_count | int | | GPUs one server uses (hardware.count, else tensor_parallel_size)
    hardware_tier | str | | price tier of the GPU-hour, or override
    usd_per_gpu_hour | float | USD/GPU-h | price of one GPU-hour used for the cost columns
    # workload and load
    workload | str | | workload name
    workload_kind | str | | fixed, ranged, chat, prefix, trace, mooncake or multiturn
    endpoint | str | | completions or chat
    input_len | int | tok | nominal prompt length of the workload
    output_len | int | tok | nominal output length of the workload
    concurrency | int | | closed loop: requests in flight
    request_rate | float | req/s | open loop: target arrival rate
    num_requests | int | | measured requests
    warmup_requests | int | | warm-up requests configured (not measured)
    slo_ttft_ms | float | ms | sweep SLO on TTFT used for goodput
    slo_tpot_ms | float | ms | sweep SLO on TPOT used for goodput
    slo_e2el_ms | float | ms | sweep SLO on E2EL used for goodput
    started_at | str | | UTC ISO time the point started
    finished_at | str | | UTC ISO time the point finished
    # outcome counts and window (measure.metrics.summarize / offline_summary)
    completed | int | | measured requests that completed
    failed | int | | measured requests that failed
    duration_s | float | s | measured window: first send to last completion
    input_tokens | int | tok | prompt tokens of the completed requests
    output_tokens | int | tok | output tokens (server usage) of the completed requests
    window_input_tokens | float | tok | prompt tokens whose first chunk fell inside the window
    window_output_tokens | float | tok | output tokens streamed inside the window
    request_throughput | float | req/s | completed requests / window
    input_tok_s | float | tok/s | window input tokens / window
    output_tok_s | float | tok/s | window output tokens / window
    total_tok_s | float | tok/s | (window input + output tokens) / window
    input_tok_s_per_gpu | float | tok/s | input_tok_s / gpu_count
    output_tok_s_per_gpu | float | tok/s | output_tok_s / gpu_count
    total_tok_s_per_gpu | float | tok/s | total_tok_s / gpu_count
    """),
    *_rate_ci_columns(),
    *_latency_columns(),
    *_latency_ci_columns(),
    *_table("""
    interactivity_tok_s_user | float | tok/s | 1000 / median TPOT in ms: tokens per second one user sees
    good_requests | int | | completed requests meeting every sweep SLO
    goodput_req_s | float | req/s | good requests / window
    client_output_tokens | int | tok | client tokenizer's count of the output tokens (a check)
    token_count_mismatches | int | | requests where client and server token counts differ
    token_discrepancy_pct | float | % | (client - server) output tokens / server output tokens
    usage_missing | int | | completed requests without a usage block
    usage_protocol_errors | int | | completed requests whose usage block was malformed (a count that is not an
        integer 0..1e9: "8", 1e300, -3); the count is dropped (the client's is used) and the raw value is in the
        request's protocol_error (requests/<point_id>.parquet)
    decode_tokens_per_chunk | float | tok | (output tokens - 1) / (content chunks - 1) over completed requests: tokens
        per streamed decode step
    timestamp_source | str | | clock of the chunk times: kernel (socket receive stamps), loop (event-loop reads),
        kernel+loop (some reads without a stamp), mixed (requests differ); empty when no request says (measure.metrics)
    # prefix cache and multi-turn sessions (measure.metrics.cache_and_session_stats)
    cached_input_tokens | int | tok | prompt tokens of the completed requests served from the prefix cache (usage
        cached_tokens)
    cached_input_frac | float | frac | cached_input_tokens / prompt tokens of the requests that reported cached_tokens
    sessions | int | | multiturn: measured sessions with a completed turn
    ttft_ms_p50_first_turn | float | ms | multiturn: median TTFT of first turns
    ttft_ms_p50_later_turns | float | ms | multiturn: median TTFT of turns 2 and later
    # load generator (measure.loadgen.LoadResult.columns)
    load_mode | str | | concurrency, rate, trace or offline
    requested_rate | float | req/s | the arrival rate asked for
    delivered_rate | float | req/s | the arrival rate the client achieved
    trace_rate | float | req/s | the trace's own mean arrival rate
    max_send_lag_ms | float | ms | largest delay of a send behind its schedule
    send_lag_p50_ms | float | ms | median send delay behind schedule
    send_lag_p99_ms | float | ms | 99th-percentile send delay behind schedule
    coalesced_chunk_frac | float | frac | share of stream chunks that carried several tokens
    loop_lag_p50_ms | float | ms | median client event-loop lag (receive side), measured window
    loop_lag_p99_ms | float | ms | 99th-percentile client event-loop lag; chunks are read this late
    client_kept_up | bool | | the client kept its send schedule and read chunks without lag
    client_lag_reason | str | | why the client did not keep up
    warmup_sent | int | | warm-up requests sent
    cooldown_sent | int | | cool-down requests sent after the measured ones
    stop_reason | str | | count, duration or exhausted: what ended the measured phase
    # wall time of the point (bench.sweep.timing)
    point_wall_s | float | s | wall seconds of the whole point, prompts, scrapes and summary included
    warmup_wall_s | float | s | wall seconds from the load's start to the first measured send
    measure_wall_s | float | s | wall seconds from the first measured send to the end of the last measured request
    cooldown_wall_s | float | s | wall seconds of the cool-down after that, until its requests were cancelled
    until_rounds | int | | load.until: rounds of num_requests (load config) measured until the output tok/s interval
        was tight enough or max_requests was reached (num_requests here is then the total); null without until
    # energy (measure.nvml via session.telemetry_columns)
    telemetry_available | bool | | GPU telemetry was sampled
    telemetry_reason | str | | why telemetry is missing or partial
    energy_j | float | J | GPU energy of the measured window
    energy_source | str | | how energy was measured (NVML counter or power samples)
    mean_power_w | float | W | mean GPU power over the point
    peak_memory_gb | float | GB | peak GPU memory used
    gpu_util_mean_pct | float | % | mean GPU utilization
    j_per_output_token | float | J/tok | energy / output tokens
    output_tok_s_per_mw | float | tok/s/MW | output throughput per megawatt of mean power
    # server /metrics (measure.prometheus via session's probe)
    server_metrics_available | bool | | the server's /metrics was scraped before and after
    kv_cache_usage_frac | float | frac | KV-cache usage at the end of the measured phase, 0-1
    prefix_cache_queries | float | tok | prefix-cache lookups from the pre-load scrape to the end of the measured phase
        (server counters: warm-up and the cool-down requests admitted by then included)
    prefix_cache_hits | float | tok | prefix-cache hits over the same span as prefix_cache_queries
    prefix_cache_hit_rate | float | frac | prefix-cache hits / queries (server counters; the measured requests' own
        share is cached_input_frac)
    prefix_cache_reset | bool | | the server's prefix cache was emptied before the point (false: the reset was refused
        or failed; null: not tried: keep, caching off, or an engine the harness did not start)
    num_preemptions | float | | sequences preempted during the point
    spec_num_drafts | float | | speculative decoding: verification steps that carried a draft
    spec_num_draft_tokens | float | tok | draft tokens proposed during the point
    spec_num_accepted_tokens | float | tok | draft tokens accepted during the point
    spec_draft_acceptance_rate | float | frac | accepted / proposed draft tokens
    spec_acceptance_length | float | tok | measured acceptance length: 1 + accepted / drafts = mean tokens emitted per
        verification step
    spec_accept_rate_per_pos | str | frac | JSON list, position i = 0..K-1: drafts whose i-th token was accepted /
        drafts
    server_prompt_tokens | float | tok | server's prompt-token counter over the point
    server_generation_tokens | float | tok | server's generation-token counter over the point
    # cost (session.cost_columns)
    usd_per_m_output | float | USD/M tok | cost per million output tokens at output_tok_s_per_gpu
    usd_per_m_total | float | USD/M tok | cost per million tokens at total_tok_s_per_gpu
    """),
)

SCHEMA: dict[str, Column] = {c.name: c for c in COLUMNS}
if len(SCHEMA) != len(COLUMNS):  # pragma: no cover - a duplicate declaration is a bug in this file
    raise RuntimeError("duplicate column in bench.sweep.rows.COLUMNS")


def _is_bool(v: Any) -> bool:
    # numpy's bool scalar is not a bool subclass (its class is named bool or bool_ by numpy version)
    return isinstance(v, bool) or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_"))


def _type_ok(dtype: Dtype, v: Any) -> bool:
    # numpy scalars: np.float64 is a float; np.int64 is not an int, hence numbers.*
    if dtype == "str":
        return isinstance(v, str)
    if dtype == "bool":
        return _is_bool(v)
    if _is_bool(v):
        return False
    if dtype == "int":
        return isinstance(v, numbers.Integral)
    return isinstance(v, numbers.Real)


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)  # NaN is how pandas spells null


def validate_row(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every declared column (missing ones None), in schema order; raises RowSchemaError
    on an undeclared column or a value of the wrong type."""
    unknown = sorted(set(row) - set(SCHEMA))
    if unknown:
        raise RowSchemaError(f"undeclared row column(s) {unknown}: declare them in bench/sweep/rows.py")
    bad = [f"{c.name}={row[c.name]!r} (expected {c.dtype})" for c in COLUMNS
           if c.name in row and not _is_null(row[c.name]) and not _type_ok(c.dtype, row[c.name])]
    if bad:
        raise RowSchemaError("row column(s) of the wrong type: " + ", ".join(bad))
    return {c.name: row.get(c.name) for c in COLUMNS}


SOURCES = ("measured", "imported", "virtual")


# The error of every point of a server group whose server did not start (bench.sweep.session); `tune` reads it
# to leave that config's ladder after one point, since no load of it can be measured.
START_FAILED = "engine failed to "


def server_start_failed(row: dict[str, Any]) -> bool:
    """The row failed because its server did not start (or restart), not because of its load."""
    return row.get("status") == "failed" and str(row.get("error") or "").startswith(START_FAILED)


def row_source(source: Any, engine: Any) -> str:
    """A row's `source`, also for rows written before the column existed (null source): those were
    measured, or simulated when their engine is `virtual`. One rule for every reader (catalog, report)."""
    if isinstance(source, str) and source in SOURCES:
        return source
    return "virtual" if engine == "virtual" else "measured"


# --- the docs table --------------------------------------------------------------------------
SCHEMA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "results-schema.md"
START, END = "<!-- columns:start -->", "<!-- columns:end -->"


def render_markdown() -> str:
    """The points-column table of docs/results-schema.md."""
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.dtype} | {c.unit or '-'} | {c.doc} |" for c in COLUMNS]
    return "\n".join(lines) + "\n"


def table_block(text: str) -> str | None:
    """The text between a page's column markers, or None when the markers are missing."""
    m = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, flags=re.DOTALL)
    return m.group(1) if m else None


def rewrite_table(path: Path = SCHEMA_PAGE) -> bool:
    """Replace the page's column table with the rendered one; True when the file changed."""
    text = path.read_text()
    if table_block(text) is None:
        raise RuntimeError(f"{path}: no {START} ... {END} markers")
    new = re.sub(re.escape(START) + r"\n.*?" + re.escape(END),
                 lambda _: f"{START}\n{render_markdown()}{END}", text, count=1, flags=re.DOTALL)
    if new != text:
        from bench.atomic import atomic_write_text

        atomic_write_text(path, new)
    return new != text


if __name__ == "__main__":
    page = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PAGE
    changed = rewrite_table(page)
    print(f"{page}: column table {'rewritten' if changed else 'already up to date'}")  # noqa: T201
