"""GPU telemetry (NVML) and vLLM `/metrics` scraping around one measured point.

Energy is what turns a benchmark into a cost of power: energy_j, J per output token and
output tokens/s per megawatt. Without NVML (no GPU, no driver, CI) every number is None and
`available` is False with a reason, so a report can say "not measured"; nothing here raises
because a GPU is absent.

NVML sampling: a background thread reads, per GPU, board power (mW), memory used and GPU
utilization every ``period_s``; the cumulative energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta and newer) is read at start and stop.
energy_j comes from the counter delta when every GPU has one, otherwise from trapezoid
integration of the power samples (one sample is always taken at start and at stop, so the
integral covers the whole window).

`/metrics` scraping: `scrape_prometheus` parses the Prometheus text format and
`vllm_metric_deltas` turns a before/after pair into KV-cache usage, prefix-cache hit rate,
preemptions and speculative-decoding acceptance, None for whatever the server does not export.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

_GB = 1e9


# --- NVML sampling ---------------------------------------------------------------------------


@dataclass
class GpuTelemetry:
    """One GPU over one point."""

    index: int
    name: str | None
    samples: int
    energy_j: float | None
    energy_source: str | None  # "counter" | "power_integral" | None
    mean_power_w: float | None  # energy_j / duration_s
    peak_power_w: float | None
    peak_memory_gb: float | None  # max sampled memory used, 1 GB = 1e9 bytes
    gpu_util_mean_pct: float | None  # mean of sampled utilization, 0-100


@dataclass
class TelemetryResult:
    """Telemetry of one point, summed (energy, power) or maxed (memory) over GPUs.

    available=False means nothing was measured (see reason); every number is then None.
    """

    available: bool
    reason: str | None = None
    duration_s: float | None = None
    gpu_count: int = 0
    energy_j: float | None = None
    energy_source: str | None = None  # "counter", "power_integral" or "mixed"
    mean_power_w: float | None = None  # sum over GPUs of energy/duration
    peak_memory_gb: float | None = None  # the largest per-GPU peak
    gpu_util_mean_pct: float | None = None  # mean over GPUs of each GPU's mean utilization
    gpus: list[GpuTelemetry] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """Flat columns for a PointResult row (per-GPU detail left out)."""
        d = asdict(self)
        d.pop("gpus")
        return {f"telemetry_{k}" if k in ("available", "reason", "duration_s") else k: v for k, v in d.items()}


def unavailable(reason: str) -> TelemetryResult:
    """The explicit "not measured" result."""
    return TelemetryResult(available=False, reason=reason)


def _load_nvml() -> ModuleType:
    import pynvml  # nvidia-ml-py; imported lazily so a broken install is a reason, not a crash

    return pynvml


class GpuSampler:
    """Samples NVML in a background thread between `start()` and `stop()`; never raises on no-GPU.

    ``nvml`` injects a module with pynvml's function names (tests pass a fake). ``period_s=None``
    disables the thread: samples are then taken at start, at stop and on each `sample()` call,
    which with an injected ``clock`` makes the power integral exactly reproducible.
    """

    def __init__(
        self,
        period_s: float | None = 0.1,
        nvml: Any = None,
        device_indices: list[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = period_s
        self._nvml = nvml
        self._device_indices = device_indices
        self._clock = clock
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._reason: str | None = None
        self._handles: list[Any] = []
        self._indices: list[int] = []
        self._names: list[str | None] = []
        self._power: list[list[tuple[float, float]]] = []  # per GPU: (t_s, watts)
        self._mem: list[list[float]] = []
        self._util: list[list[float]] = []
        self._energy_start_mj: list[float | None] = []
        self._t_start: float | None = None
        self._started = False
        self._result: TelemetryResult | None = None

    # context-manager sugar: `with GpuSampler() as s: ...; result = s.result`
    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = self.stop()

    def start(self) -> None:
        """Initialise NVML and take the first sample; failure only marks the sampler unavailable."""
        self._started = True
        try:
            nvml = self._nvml if self._nvml is not None else _load_nvml()
            self._nvml = nvml
            nvml.nvmlInit()
        except Exception as e:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._reason = f"NVML unavailable: {_describe(e)}"
            return
        try:
            count = nvml.nvmlDeviceGetCount()
            indices = self._device_indices if self._device_indices is not None else list(range(count))
            if not indices:
                raise RuntimeError("no GPUs visible to NVML")
            for i in indices:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                self._handles.append(h)
                self._indices.append(i)
                self._names.append(_try(lambda h=h: _to_str(nvml.nvmlDeviceGetName(h))))
                self._power.append([])
                self._mem.append([])
                self._util.append([])
                self._energy_start_mj.append(self._energy_mj(h))
        except Exception as e:
            self._reason = f"NVML device query failed: {_describe(e)}"
            self._shutdown()
            return
        self._t_start = self._clock()
        self.sample()
        if self.period_s:
            self._stop_evt.clear()
            self._thread = threading.Thread(target=self._run, name="maas-bench-nvml", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self.period_s
        while not self._stop_evt.wait(self.period_s):
            self.sample()

    @property
    def sample_count(self) -> int:
        """Power samples taken so far (first GPU); 0 when unavailable."""
        with self._lock:
            return len(self._power[0]) if self._power else 0

    def sample(self) -> None:
        """Read power, memory and utilization of every GPU once (errors skip that reading)."""
        if self._reason is not None or not self._handles:
            return
        nvml = self._nvml
        t = self._clock()
        with self._lock:
            for g, h in enumerate(self._handles):
                p_mw = _try(lambda h=h: nvml.nvmlDeviceGetPowerUsage(h))
                if p_mw is not None:
                    self._power[g].append((t, float(p_mw) / 1000.0))
                mem = _try(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used)
                if mem is not None:
                    self._mem[g].append(float(mem))
                util = _try(lambda h=h: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                if util is not None:
                    self._util[g].append(float(util))

    def stop(self) -> TelemetryResult:
        """Stop sampling and summarise; returns an unavailable result instead of raising."""
        if not self._started:
            return unavailable("sampler was never started")
        if self._result is not None:
            return self._result
        if self._reason is not None:
            self._result = unavailable(self._reason)
            return self._result
        if self._thread is not None:
            self._stop_evt.set()
            self._thread.join(max(1.0, 5 * (self.period_s or 0)))
            self._thread = None
        self.sample()
        t_end = self._clock()
        assert self._t_start is not None
        duration_s = t_end - self._t_start
        gpus: list[GpuTelemetry] = []
        for g, h in enumerate(self._handles):
            end_mj = self._energy_mj(h)
            start_mj = self._energy_start_mj[g]
            power = self._power[g]
            if start_mj is not None and end_mj is not None and end_mj >= start_mj:
                energy_j: float | None = (end_mj - start_mj) / 1000.0
                source: str | None = "counter"
            else:
                energy_j = trapezoid_energy_j(power)
                source = "power_integral" if energy_j is not None else None
            gpus.append(
                GpuTelemetry(
                    index=self._indices[g],
                    name=self._names[g],
                    samples=len(power),
                    energy_j=energy_j,
                    energy_source=source,
                    mean_power_w=energy_j / duration_s if energy_j is not None and duration_s > 0 else None,
                    peak_power_w=max((p for _, p in power), default=None),
                    peak_memory_gb=max(self._mem[g]) / _GB if self._mem[g] else None,
                    gpu_util_mean_pct=sum(self._util[g]) / len(self._util[g]) if self._util[g] else None,
                )
            )
        self._shutdown()
        self._result = _combine(gpus, duration_s)
        return self._result

    def _energy_mj(self, handle: Any) -> float | None:
        """The cumulative energy counter (mJ), None where unsupported (pre-Volta, some vGPUs)."""
        return _try(lambda: float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)))

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as e:
            log.debug("nvmlShutdown failed: %s", _describe(e))


def _combine(gpus: list[GpuTelemetry], duration_s: float) -> TelemetryResult:
    energies = [g.energy_j for g in gpus]
    energy_j = sum(e for e in energies if e is not None) if all(e is not None for e in energies) else None
    sources = {g.energy_source for g in gpus}
    source = None if energy_j is None else (sources.pop() if len(sources) == 1 else "mixed")
    mems = [g.peak_memory_gb for g in gpus if g.peak_memory_gb is not None]
    utils = [g.gpu_util_mean_pct for g in gpus if g.gpu_util_mean_pct is not None]
    return TelemetryResult(
        available=True,
        duration_s=duration_s,
        gpu_count=len(gpus),
        energy_j=energy_j,
        energy_source=source,
        mean_power_w=energy_j / duration_s if energy_j is not None and duration_s > 0 else None,
        peak_memory_gb=max(mems) if mems else None,
        gpu_util_mean_pct=sum(utils) / len(utils) if utils else None,
        gpus=gpus,
    )


def trapezoid_energy_j(samples: list[tuple[float, float]]) -> float | None:
    """Integral of power (W) over time (s) by the trapezoid rule; None with fewer than two samples."""
    if len(samples) < 2:
        return None
    total = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False):
        total += (t1 - t0) * (p0 + p1) / 2.0
    return total


def derive_energy_metrics(
    energy_j: float | None, output_tokens: int | float | None, duration_s: float | None
) -> dict[str, float | None]:
    """Energy per output token and output throughput per megawatt of mean power.

    mean_power_w = energy_j / duration_s; j_per_output_token = energy_j / output_tokens;
    output_tok_s_per_mw = (output_tokens / duration_s) / (mean_power_w / 1e6), which reduces to
    output_tokens * 1e6 / energy_j. All None when energy is unknown or a divisor is zero.
    """
    keys = ("mean_power_w", "j_per_output_token", "output_tok_s_per_mw")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if energy_j is None or not math.isfinite(energy_j):
        return out
    if duration_s:
        out["mean_power_w"] = energy_j / duration_s
    if output_tokens:
        out["j_per_output_token"] = energy_j / output_tokens
    if duration_s and output_tokens and energy_j > 0:
        out["output_tok_s_per_mw"] = (output_tokens / duration_s) / (energy_j / duration_s / 1e6)
    return out


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _to_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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
    - spec_decode_acceptance_rate = accepted / draft tokens, spec_decode_mean_acceptance_len =
      1 + accepted / drafts (vLLM's definition), or the older acceptance-rate gauge;
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
    return {
        "kv_cache_usage_frac": metric_mean(after, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hit_rate,
        "num_preemptions": counter_delta(before, after, "vllm:num_preemptions"),
        "spec_decode_acceptance_rate": acceptance,
        "spec_decode_mean_acceptance_len": None if per_draft is None else 1.0 + per_draft,
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
