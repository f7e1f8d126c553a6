"""RequestRecord -> PointResult. Every metric formula of maas-bench is defined here, once.

Times are `time.perf_counter_ns()` stamps taken in the client process.

- TTFT  = first content-bearing chunk - request send.
- E2EL  = last content-bearing chunk - request send.
- TPOT  (per request) = (E2EL - TTFT) / (output_tokens - 1); undefined (None) for outputs of one
  token. This is vLLM's definition; GuideLLM's "TPOT" includes TTFT and is a different number.
- ITL   = every gap between consecutive content-bearing chunks, kept as samples. A chunk carrying
  k tokens is one gap (its k is recorded in `chunk_tokens`), so ITL is per chunk, not per token.
- output_tokens = the server's `usage.completion_tokens`; the client's tokenizer count is kept
  as a check, and the relative discrepancy is reported. When the server gives no usage, the
  client count is used and `usage_missing` is counted; a malformed count (not an integer 0..1e9) is
  dropped the same way and `usage_protocol_errors` counts those requests (bench.measure.client.read_usage).
- Throughputs are over the measured window: first send to last completion of the measured
  requests (warm-up and cool-down requests do not define it): request/s, input tok/s, output
  tok/s, total tok/s, and each per GPU. Token rates count the tokens the server streamed *inside*
  the window, whichever request they belong to (a warm-up request still finishing, a measured
  one, a cool-down one), divided by the window: the server's steady-state rate, which is what a
  GPU-hour buys. Counting only the measured requests' tokens over the same window would leave
  out the warm-up and cool-down tokens that shared the server in the window's first and last
  seconds and understate throughput (by ~25% at concurrency 16 with 64 requests). Output tokens
  of a request are spread evenly over its content chunks; a request's input tokens count when
  its first chunk (the end of its prefill) falls inside the window. `window_output_tokens` and
  `window_input_tokens` hold these counts; `input_tokens` / `output_tokens` remain the measured
  requests' totals (per-request accounting for cost and margin). request/s counts measured
  completions.
- Interactivity (tok/s/user) = 1000 / median TPOT in ms.
- Goodput = completed requests that meet every SLO threshold given (TTFT, TPOT, E2EL), per second
  of the measured window. A request with undefined TPOT meets a TPOT SLO vacuously.
- Percentiles: mean, p50, p90, p95, p99, linear interpolation between order statistics (numpy's
  default, the same as vLLM's benchmark client).
- 95% confidence intervals (`<figure>_ci_lo` / `_ci_hi`, bench/measure/intervals.py): percentile
  bootstrap over requests for the p50/p90/p99 of TTFT, TPOT and E2EL; batch means over the window (10
  equal batches, Student's t) for output tok/s, total tok/s and request/s; None below 10 measured requests.
- Offline (max-throughput) points: the window is the measured `LLM.generate` call; token rates are
  its prompt / generated tokens over that window; there are no per-request latencies (`offline_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.config.slo import Slo
from bench.measure.intervals import CI_RATES, MIN_REQUESTS, empty_ci_columns, latency_ci_columns, rate_ci_columns
from bench.units import MS_PER_S, NS_PER_MS, NS_PER_S

PERCENTILES = (50, 90, 95, 99)


@dataclass
class RequestRecord:
    """What the client observed for one request. Timestamps are perf_counter_ns()."""

    request_idx: int
    send_ns: int
    input_tokens: int  # requested/known prompt length (server usage.prompt_tokens when given)
    max_tokens: int
    chunk_ns: list[int] = field(default_factory=list)  # arrival of each content-bearing chunk
    chunk_tokens: list[int] = field(default_factory=list)  # tokens per content chunk, when known
    done_ns: int | None = None  # end of stream ([DONE] or connection close)
    ok: bool = False
    error: str | None = None
    http_status: int | None = None
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    client_output_tokens: int | None = None  # client tokenizer count of the streamed text
    output_text: str = ""
    warmup: bool = False
    cooldown: bool = False  # sent after the measured requests to keep the load on; not measured
    cancelled: bool = False  # cut off when the measured phase ended (cool-down only)
    scheduled_ns: int | None = None  # intended send time (open-loop); send_ns - scheduled_ns = client lag
    # Content chunks that arrived in the same network read as an earlier one: they share its timestamp,
    # so a high share means the client (not the server) set the measured ITL.
    coalesced_chunks: int = 0
    timestamp_source: str | None = None  # "kernel" receive stamps or event-"loop" reads (bench.measure.client)
    # usage.prompt_tokens_details.cached_tokens: prompt tokens the server's prefix cache served (None = not reported)
    cached_input_tokens: int | None = None
    # a malformed usage block (e.g. completion_tokens "8", 1e300, -3), with the raw value; the count is dropped
    protocol_error: str | None = None
    session_id: int | None = None  # multiturn: the conversation this request is a turn of
    turn: int | None = None  # multiturn: 1-based turn number

    @property
    def measured(self) -> bool:
        return not (self.warmup or self.cooldown)

    def chunk_token_weights(self) -> list[float]:
        """Output tokens of each content chunk: the server's usage count spread evenly over the chunks, else
        the chunk's own count, else 1. The events of the windowed token rates and of their intervals."""
        if not self.chunk_ns:
            return []
        if self.ok and self.usage_completion_tokens is not None:
            return [self.usage_completion_tokens / len(self.chunk_ns)] * len(self.chunk_ns)
        if len(self.chunk_tokens) == len(self.chunk_ns):
            return [float(k) for k in self.chunk_tokens]
        return [1.0] * len(self.chunk_ns)

    @property
    def output_tokens(self) -> int:
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        if self.client_output_tokens is not None:
            return self.client_output_tokens
        return sum(self.chunk_tokens) if self.chunk_tokens else len(self.chunk_ns)

    @property
    def prompt_tokens(self) -> int:
        return self.usage_prompt_tokens if self.usage_prompt_tokens is not None else self.input_tokens

    @property
    def ttft_ms(self) -> float | None:
        return (self.chunk_ns[0] - self.send_ns) / NS_PER_MS if self.ok and self.chunk_ns else None

    @property
    def e2el_ms(self) -> float | None:
        return (self.chunk_ns[-1] - self.send_ns) / NS_PER_MS if self.ok and self.chunk_ns else None

    @property
    def tpot_ms(self) -> float | None:
        ttft, e2el, n = self.ttft_ms, self.e2el_ms, self.output_tokens
        if ttft is None or e2el is None or n <= 1:
            return None
        return (e2el - ttft) / (n - 1)

    @property
    def itl_ms(self) -> list[float]:
        if not self.ok:
            return []
        return [(b - a) / NS_PER_MS for a, b in zip(self.chunk_ns, self.chunk_ns[1:], strict=False)]

    @property
    def end_ns(self) -> int:
        if self.done_ns is not None:
            return self.done_ns
        return self.chunk_ns[-1] if self.chunk_ns else self.send_ns


def meets_request_slo(r: RequestRecord, limits: dict[str, float]) -> bool:
    """Goodput test of one request against `Slo.request_limits()` (the percentile does not apply to
    one request); an undefined value (TPOT of a 1-token output) meets its limit vacuously."""
    if not r.ok:
        return False
    return all(v is None or v <= lim for m, lim in limits.items() for v in [getattr(r, m)])


def percentile_stats(name: str, samples: Sequence[float]) -> dict[str, float | None]:
    """`{name}_mean`, `{name}_p50` ... `{name}_p99`; None for every key when there are no samples."""
    keys = [f"{name}_mean"] + [f"{name}_p{p}" for p in PERCENTILES]
    if len(samples) == 0:
        return dict.fromkeys(keys)
    arr = np.asarray(samples, dtype=float)
    out: dict[str, float | None] = {f"{name}_mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True):
        out[f"{name}_p{p}"] = float(v)
    return out



def per_gpu_columns(row: dict[str, Any], gpu_count: int) -> dict[str, float | None]:
    """`*_tok_s_per_gpu` from a row's token rates: the figure every $/M divides by (the one place)."""
    return {f"{k}_per_gpu": row[k] / gpu_count if row.get(k) is not None else None
            for k in ("input_tok_s", "output_tok_s", "total_tok_s")}


def interactivity_tok_s_user(tpot_ms_p50: float | None) -> float | None:
    """Tokens/s one user sees at the median: 1000 / median TPOT (the x axis of throughput-interactivity plots)."""
    return MS_PER_S / tpot_ms_p50 if tpot_ms_p50 else None

def summarize(
    records: Sequence[RequestRecord],
    gpu_count: int = 1,
    slo: Slo | None = None,
) -> dict[str, Any]:
    """Aggregate the measured (non-warm-up) requests of one point into one flat row of metrics."""
    if gpu_count <= 0:
        raise ValueError("gpu_count must be > 0")
    limits = slo.request_limits() if slo is not None else {}
    measured = [r for r in records if r.measured]
    done = [r for r in measured if r.ok]
    row: dict[str, Any] = {
        "num_requests": len(measured),
        "completed": len(done),
        "failed": len(measured) - len(done),
        "input_tokens": sum(r.prompt_tokens for r in done),
        "output_tokens": sum(r.output_tokens for r in done),
    }
    row.update(empty_ci_columns())  # the latency intervals stay None below MIN_REQUESTS
    row.update(window_rates(records))  # the window's rates and their intervals
    row.update(per_gpu_columns(row, gpu_count))

    ttfts = [r.ttft_ms for r in done if r.ttft_ms is not None]
    tpots = [r.tpot_ms for r in done if r.tpot_ms is not None]
    e2els = [r.e2el_ms for r in done if r.e2el_ms is not None]
    itls = [x for r in done for x in r.itl_ms]
    for name, samples in (("ttft_ms", ttfts), ("tpot_ms", tpots), ("itl_ms", itls), ("e2el_ms", e2els)):
        row.update(percentile_stats(name, samples))
    if len(measured) >= MIN_REQUESTS:
        row.update(latency_ci_columns({"ttft_ms": ttfts, "tpot_ms": tpots, "e2el_ms": e2els}))
    row["interactivity_tok_s_user"] = interactivity_tok_s_user(row["tpot_ms_p50"])
    good = sum(1 for r in done if meets_request_slo(r, limits))
    row["good_requests"] = good
    row["goodput_req_s"] = good / row["duration_s"] if row["duration_s"] > 0 else None
    row.update(token_discrepancy(done))
    row["decode_tokens_per_chunk"] = decode_tokens_per_chunk(done)
    row["timestamp_source"] = timestamp_source(done)
    row.update(cache_and_session_stats(done))
    return row


def timestamp_source(done: Sequence[RequestRecord]) -> str | None:
    """Which clock timed the point's completed requests: their `timestamp_source` ("kernel", "loop" for the
    event loop's reads, "kernel+loop") when they agree, else "mixed"; None when no request says (the simulator,
    an import). Why a point column: the clocks differ by the client's loop lag under load (docs/metrics.md
    "Timestamps"), so a figure says which it is."""
    kinds = {r.timestamp_source for r in done if r.timestamp_source}
    if not kinds:
        return None
    return kinds.pop() if len(kinds) == 1 else "mixed"


def window_rates(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """The figures of the measured window (first measured send to last measured end): `duration_s`, the
    tokens streamed inside it, request/s, input/output/total tok/s, and the 95% intervals of CI_RATES
    (None below MIN_REQUESTS measured requests); rates are None when nothing was measured.

    One function for two callers that must agree: `summarize` (the row) and load.until's stop rule between
    rounds (bench.measure.loadgen.throughput_rel_width), which judges the very interval the row will carry.
    A token rate and its interval are read from the same events (`window_events`), so the mean of the batch
    rates is the row's figure by construction. Vectorised: the stop rule runs it on the event loop."""
    measured = [r for r in records if r.measured]
    done = [r for r in measured if r.ok]
    out: dict[str, Any] = {f"{n}_ci_{end}": None for n in CI_RATES for end in ("lo", "hi")}
    if not measured:
        out.update({"duration_s": 0.0, "window_input_tokens": 0.0, "window_output_tokens": 0.0,
                    "request_throughput": None, "input_tok_s": None, "output_tok_s": None, "total_tok_s": None})
        return out
    start, end = min(r.send_ns for r in measured), max(r.end_ns for r in measured)
    duration_s = max(end - start, 1) / NS_PER_S
    events = window_events(records, done)

    def inside(name: str) -> float:
        times, weights = events[name]
        return float(np.sum(weights[(times >= start) & (times <= end)])) if weights is not None else 0.0

    win_in, win_out = inside("input_tok_s"), inside("output_tok_s")
    out.update({"duration_s": duration_s, "window_input_tokens": win_in, "window_output_tokens": win_out,
                "request_throughput": len(done) / duration_s, "input_tok_s": win_in / duration_s,
                "output_tok_s": win_out / duration_s, "total_tok_s": (win_in + win_out) / duration_s})
    if len(measured) >= MIN_REQUESTS:
        out.update(rate_ci_columns(events, start, end))
    return out


def window_events(records: Sequence[RequestRecord], done: Sequence[RequestRecord],
                  ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The events behind each windowed rate, as (times in ns, weights): output tokens at their chunks (every
    request's, as `output_tok_s`), input tokens at the first chunk (`input_tok_s`: a request's prompt counts
    when its prefill ends inside the window), completions of the measured requests."""
    out_t = [t for r in records for t in r.chunk_ns]
    out_w = [w for r in records for w in r.chunk_token_weights()]
    firsts = [r for r in records if r.chunk_ns]
    in_t = [r.chunk_ns[0] for r in firsts]
    in_w = [float(r.prompt_tokens) for r in firsts]
    out_times, in_times = np.asarray(out_t, dtype=np.int64), np.asarray(in_t, dtype=np.int64)
    out_weights, in_weights = np.asarray(out_w, dtype=float), np.asarray(in_w, dtype=float)
    return {
        "output_tok_s": (out_times, out_weights),
        "input_tok_s": (in_times, in_weights),
        "total_tok_s": (np.concatenate([out_times, in_times]), np.concatenate([out_weights, in_weights])),
        "request_throughput": (np.asarray([r.end_ns for r in done], dtype=np.int64), None),
    }


def decode_tokens_per_chunk(done: Sequence[RequestRecord]) -> float | None:
    """Tokens per streamed decode chunk: sum(output tokens - 1) / sum(content chunks - 1) over the completed
    requests with two or more chunks (the first chunk closes the prefill and carries one token).

    Why: with speculative decoding one engine step emits 1 + accepted tokens and vLLM streams them as one
    chunk, so this client-side count is an independent check on the server's acceptance length
    (spec_acceptance_length, from /metrics); 1.0 without speculation. It reads high when the server's API
    process falls behind and merges several steps into one chunk. None when no request had two chunks.
    """
    reqs = [r for r in done if len(r.chunk_ns) >= 2]
    chunks = sum(len(r.chunk_ns) - 1 for r in reqs)
    return sum(r.output_tokens - 1 for r in reqs) / chunks if chunks else None


def cache_and_session_stats(done: Sequence[RequestRecord]) -> dict[str, Any]:
    """Measured prefix-cache hits and multi-turn structure of the completed measured requests.

    cached_input_frac = sum of usage cached_tokens / sum of prompt tokens, over the requests whose
    usage reported cached_tokens (None when none did: the server did not say, which is not 0).
    TTFT p50 of first turns and of later turns: a prefix cache shortens the later turns' prefill.
    """
    rep = [r for r in done if r.cached_input_tokens is not None]
    prompt = sum(r.prompt_tokens for r in rep)
    cached = sum(r.cached_input_tokens or 0 for r in rep)
    first = [r.ttft_ms for r in done if r.turn == 1 and r.ttft_ms is not None]
    later = [r.ttft_ms for r in done if r.turn is not None and r.turn > 1 and r.ttft_ms is not None]
    sessions = {r.session_id for r in done if r.session_id is not None}
    return {
        "cached_input_tokens": cached if rep else None,
        "cached_input_frac": cached / prompt if rep and prompt else None,
        "sessions": len(sessions) if sessions else None,
        "ttft_ms_p50_first_turn": float(np.percentile(first, 50)) if first else None,
        "ttft_ms_p50_later_turns": float(np.percentile(later, 50)) if later else None,
    }


def token_discrepancy(done: Sequence[RequestRecord]) -> dict[str, Any]:
    """Server `usage` vs client tokenizer counts: how far apart, and how often usage is missing."""
    pairs = [
        (r.usage_completion_tokens, r.client_output_tokens)
        for r in done
        if r.usage_completion_tokens is not None and r.client_output_tokens is not None
    ]
    server = sum(p[0] for p in pairs)
    client = sum(p[1] for p in pairs)
    return {
        "client_output_tokens": client if pairs else None,
        "token_count_mismatches": sum(1 for s, c in pairs if s != c),
        "token_discrepancy_pct": (100.0 * (client - server) / server) if server else None,
        "usage_missing": sum(1 for r in done if r.usage_completion_tokens is None),
        "usage_protocol_errors": sum(1 for r in done if r.protocol_error is not None),
    }


def offline_summary(elapsed_s: float, num_prompts: int, completed: int, input_tokens: int, output_tokens: int,
                    gpu_count: int = 1) -> dict[str, Any]:
    """Row metrics of an offline batch: the same throughput columns, latency columns left empty."""
    if gpu_count <= 0:
        raise ValueError("gpu_count must be > 0")
    row: dict[str, Any] = {
        "num_requests": num_prompts, "completed": completed, "failed": num_prompts - completed,
        "duration_s": elapsed_s, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "window_input_tokens": float(input_tokens), "window_output_tokens": float(output_tokens),
    }
    rate = (lambda x: x / elapsed_s) if elapsed_s > 0 else (lambda x: None)
    row["request_throughput"] = rate(completed)
    row["input_tok_s"] = rate(input_tokens)
    row["output_tok_s"] = rate(output_tokens)
    row["total_tok_s"] = rate(input_tokens + output_tokens)
    row.update(per_gpu_columns(row, gpu_count))
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        row.update(percentile_stats(name, []))
    row.update({"interactivity_tok_s_user": None, "good_requests": None, "goodput_req_s": None})
    row.update(empty_ci_columns())  # one timed batch: no requests to resample, no batches in time
    return row
