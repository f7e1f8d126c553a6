"""GPU telemetry from NVML around one measured point: power, memory, utilization, energy.

Energy is what turns a benchmark into a cost of power: energy_j, J per output token and
output tokens/s per megawatt. Without NVML (no GPU, no driver, CI) every number is None and
`available` is False with a reason, so a report can say "not measured"; nothing here raises
because a GPU is absent.

A background thread reads, per GPU, board power (mW), memory used and GPU utilization every
``period_s``; the cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta
and newer) is read at start and stop. energy_j comes from the counter delta when every GPU has
one, otherwise from trapezoid integration of the power samples (one sample is always taken at
start and at stop, so the integral covers the whole window).
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

from bench.units import bytes_to_gb, from_milli, per_million

log = logging.getLogger(__name__)


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
                    self._power[g].append((t, from_milli(float(p_mw))))
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
                energy_j: float | None = from_milli(end_mj - start_mj)
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
                    peak_memory_gb=bytes_to_gb(max(self._mem[g])) if self._mem[g] else None,
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
        out["output_tok_s_per_mw"] = (output_tokens / duration_s) / per_million(energy_j / duration_s)
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
