"""vLLM's Prometheus `/metrics`: fetch, parse, and turn a before/after pair into a point's deltas.

`scrape_prometheus` parses the Prometheus text format and `vllm_metric_deltas` turns a
before/after pair into KV-cache usage, prefix-cache hit rate, preemptions and speculative-decoding
acceptance, None for whatever the server does not export. The columns these become in a points
row are declared in bench.sweep.rows (the probe that scrapes is bench.sweep.session.ServerProbe).
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- Prometheus /metrics ---------------------------------------------------------------------


def scrape_prometheus(text: str) -> dict[str, float]:
    """Parse Prometheus text exposition into {series: value}.

    A series key is the metric name, plus its labels sorted by name as ``{a="x",b="y"}`` when
    there are any (so the same series always has the same key). Comments (# HELP/# TYPE), blank
    lines and malformed lines are skipped; histogram and summary samples keep their
    ``_bucket``/``_sum``/``_count`` names; values may be NaN or +/-Inf; timestamps are ignored.
    """
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = _parse_sample(line)
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out


def _parse_sample(line: str) -> tuple[str, float] | None:
    brace = line.find("{")
    space = _first_space(line)
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace].strip()
        labels, end = _parse_labels(line, brace + 1)
        if labels is None:
            return None
        rest = line[end:].split()
    else:
        parts = line.split()
        name, labels, rest = parts[0], [], parts[1:]
    if not name or not rest:
        return None
    try:
        value = float(rest[0])  # float() accepts NaN, +Inf, -Inf, exponents
    except ValueError:
        return None
    if labels:
        name += "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels)) + "}"
    return name, value


def _first_space(line: str) -> int:
    for i, c in enumerate(line):
        if c in " \t":
            return i
    return -1


def _parse_labels(line: str, i: int) -> tuple[list[tuple[str, str]] | None, int]:
    """Parse ``k="v",...}`` from position i; returns (labels, index after '}')."""
    labels: list[tuple[str, str]] = []
    n = len(line)
    while i < n:
        while i < n and line[i] in " \t,":
            i += 1
        if i < n and line[i] == "}":
            return labels, i + 1
        eq = line.find("=", i)
        if eq == -1:
            return None, n
        key = line[i:eq].strip()
        i = eq + 1
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] != '"':
            return None, n
        i += 1
        buf: list[str] = []
        while i < n and line[i] != '"':
            if line[i] == "\\" and i + 1 < n:
                nxt = line[i + 1]
                buf.append("\n" if nxt == "n" else nxt)
                i += 2
            else:
                buf.append(line[i])
                i += 1
        if i >= n:
            return None, n
        labels.append((key, "".join(buf)))
        i += 1
    return None, n


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_values(samples: dict[str, float], name: str) -> list[float]:
    """Every series value of one metric name, whatever its labels."""
    prefix = name + "{"
    return [v for k, v in samples.items() if k == name or k.startswith(prefix)]


def metric_sum(samples: dict[str, float], *names: str) -> float | None:
    """Sum over label sets of the first of ``names`` present (counters: totals over engines)."""
    for name in names:
        vals = metric_values(samples, name)
        if vals:
            return float(sum(vals))
    return None


def metric_mean(samples: dict[str, float], *names: str) -> float | None:
    """Mean over label sets of the first of ``names`` present (gauges such as cache usage)."""
    for name in names:
        vals = metric_values(samples, name)
        if vals:
            return float(sum(vals) / len(vals))
    return None


def _counter_names(*bases: str) -> tuple[str, ...]:
    # prometheus_client exports counters as NAME_total; some exporters drop the suffix.
    return tuple(n for b in bases for n in (b + "_total", b))


def counter_delta(before: dict[str, float], after: dict[str, float], *bases: str) -> float | None:
    """after - before of a counter (summed over labels); None when absent after.

    A counter absent before counts as 0 (vLLM creates some lazily); a counter that went down
    means the server restarted, so the increase is the after value (Prometheus' reset rule).
    """
    names = _counter_names(*bases)
    a = metric_sum(after, *names)
    if a is None:
        return None
    b = metric_sum(before, *names) or 0.0
    return a - b if a >= b else a


def counter_delta_by_label(before: dict[str, float], after: dict[str, float], base: str,
                           label: str) -> dict[int, float] | None:
    """Per value of an integer `label` (e.g. vLLM's spec-decode `position`), after - before of a counter
    summed over its other labels; None when the counter is absent after. Same reset rule as counter_delta."""
    names = set(_counter_names(base))
    pattern = re.compile(rf'[{{,]{re.escape(label)}="(\d+)"')

    def by_label(samples: dict[str, float]) -> dict[int, float]:
        out: dict[int, float] = {}
        for key, v in samples.items():
            m = pattern.search(key)
            if m and key.split("{", 1)[0] in names:
                out[int(m.group(1))] = out.get(int(m.group(1)), 0.0) + v
        return out

    a, b = by_label(after), by_label(before)
    if not a:
        return None
    return {k: (v - b.get(k, 0.0) if v >= b.get(k, 0.0) else v) for k, v in a.items()}


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def vllm_metric_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """What a point did to a vLLM server, from `/metrics` scraped before and after it.

    - kv_cache_usage_frac: the KV-cache usage gauge after the point, 0-1
      (``vllm:kv_cache_usage_perc``, or the older ``vllm:gpu_cache_usage_perc``), mean over engines;
    - prefix_cache_queries / prefix_cache_hits (tokens) and prefix_cache_hit_rate = hits / queries
      over the point (``vllm:prefix_cache_*``, or the older ``vllm:gpu_prefix_cache_*``);
    - num_preemptions: preemptions during the point;
    - speculative decoding (vLLM's SpecDecodingProm counters, vllm/v1/spec_decode/metrics.py, exported only
      when the server speculates): spec_num_drafts (verification steps that carried a draft),
      spec_num_draft_tokens, spec_num_accepted_tokens; spec_draft_acceptance_rate = accepted / draft
      tokens (or the older acceptance-rate gauge); spec_acceptance_length = 1 + accepted / drafts, the
      mean tokens one verification step emits (vLLM's "mean acceptance length"); spec_accept_rate_per_pos
      = accepted at draft position i / drafts, i = 0..K-1 (a list; the chance that the i-th draft token
      is accepted, counting positions after a rejection as not accepted);
    - prompt_tokens, generation_tokens: server-side token counters, to cross-check the client.
    None wherever the server does not export the metric (or a divisor is zero).
    """
    queries = counter_delta(before, after, "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
    hits = counter_delta(before, after, "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")
    hit_rate = _ratio(hits, queries)
    if hit_rate is None and queries is None:
        hit_rate = metric_mean(after, "vllm:gpu_prefix_cache_hit_rate")
    accepted = counter_delta(before, after, "vllm:spec_decode_num_accepted_tokens")
    draft_tokens = counter_delta(before, after, "vllm:spec_decode_num_draft_tokens")
    drafts = counter_delta(before, after, "vllm:spec_decode_num_drafts")
    acceptance = _ratio(accepted, draft_tokens)
    if acceptance is None and draft_tokens is None:
        acceptance = metric_mean(after, "vllm:spec_decode_draft_acceptance_rate")
    per_draft = _ratio(accepted, drafts)
    per_pos = counter_delta_by_label(before, after, "vllm:spec_decode_num_accepted_tokens_per_pos", "position")
    rates_per_pos = None if not per_pos or not drafts else [per_pos[i] / drafts for i in sorted(per_pos)]
    return {
        "kv_cache_usage_frac": metric_mean(after, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hit_rate,
        "num_preemptions": counter_delta(before, after, "vllm:num_preemptions"),
        "spec_num_drafts": drafts,
        "spec_num_draft_tokens": draft_tokens,
        "spec_num_accepted_tokens": accepted,
        "spec_draft_acceptance_rate": acceptance,
        "spec_acceptance_length": None if per_draft is None else 1.0 + per_draft,
        "spec_accept_rate_per_pos": rates_per_pos,
        "prompt_tokens": counter_delta(before, after, "vllm:prompt_tokens"),
        "generation_tokens": counter_delta(before, after, "vllm:generation_tokens"),
    }


async def fetch_metrics(base_url: str, session: Any, timeout_s: float = 5.0) -> str | None:
    """GET ``<server root>/metrics`` with an aiohttp session; None on any failure (logged).

    base_url may be the server root or end in ``/v1``.
    """
    import aiohttp

    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    try:
        async with session.get(root + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                log.warning("GET %s/metrics answered %d", root, resp.status)
                return None
            return await resp.text()
    except Exception as e:  # connection refused, timeout, ...: metrics are optional
        log.warning("GET %s/metrics failed: %s", root, _describe(e))
        return None


# vLLM's dev route (vllm/entrypoints/serve/dev/cache/api_router.py, vllm 0.32): served only when the server runs
# with VLLM_SERVER_DEV_MODE=1; answers {"success": false} while blocks are held (requests still running).
RESET_PREFIX_CACHE_PATH = "/reset_prefix_cache"
RESET_RETRY_S = 0.25
RESET_WAIT_S = 10.0  # the previous point's cancelled cool-down requests are aborted within this


async def reset_prefix_cache(base_url: str, session: Any, wait_s: float = RESET_WAIT_S) -> str | None:
    """POST ``<server root>/reset_prefix_cache`` until vLLM says it emptied its prefix cache; None when it did,
    else why not (404: the server does not run in dev mode; still busy after `wait_s`; no answer).

    Why retried: vLLM refuses the reset while any KV block is held, and the requests of the previous point's
    cool-down, cancelled by the client, are aborted by the server a moment later."""
    import asyncio
    import time

    import aiohttp

    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    deadline = time.monotonic() + wait_s
    while True:
        try:
            async with session.post(root + RESET_PREFIX_CACHE_PATH, timeout=aiohttp.ClientTimeout(total=5.0)) as r:
                if r.status != 200:
                    return f"POST {RESET_PREFIX_CACHE_PATH} answered HTTP {r.status}"
                body = await r.json(content_type=None)
                if isinstance(body, dict) and body.get("success") is True:
                    return None
                why = f"the server still held KV blocks after {wait_s:g} s ({body!r})"
        except Exception as e:  # connection refused, timeout, not JSON
            return f"POST {RESET_PREFIX_CACHE_PATH} failed: {_describe(e)}"
        if time.monotonic() >= deadline:
            return why
        await asyncio.sleep(RESET_RETRY_S)
