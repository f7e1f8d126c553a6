"""NVML sampling with an injected fake NVML module: the GPU path, the no-GPU path, energy maths.

Golden numbers are worked out by hand in the comments; none come from running the code.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bench.measure import nvml
from bench.measure.nvml import GpuSampler, derive_energy_metrics, trapezoid_energy_j


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


class FakeNvml:
    """The pynvml functions GpuSampler uses, driven by the test."""

    def __init__(self, gpus: int = 1, energy_counter: list[bool] | None = None) -> None:
        self.power_mw = [0.0] * gpus
        self.energy_mj = [0.0] * gpus
        self.mem_used = [0] * gpus
        self.util_pct = [0] * gpus
        self.energy_counter = energy_counter or [True] * gpus
        self.count = gpus
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.init_calls += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        return b"Fake H200"

    def nvmlDeviceGetPowerUsage(self, h: int) -> float:  # noqa: N802
        return self.power_mw[h]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> float:  # noqa: N802
        if not self.energy_counter[h]:
            raise NVMLError("Not Supported")
        return self.energy_mj[h]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=self.mem_used[h], total=141e9, free=141e9 - self.mem_used[h])

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=self.util_pct[h], memory=0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


NULL_NUMBERS = ("energy_j", "mean_power_w", "peak_memory_gb", "gpu_util_mean_pct", "duration_s")


def test_energy_from_counter_two_gpus() -> None:
    nv = FakeNvml(gpus=2)
    clock = FakeClock()
    nv.energy_mj = [1_000_000.0, 5_000_000.0]
    nv.mem_used = [20_000_000_000, 30_000_000_000]
    nv.util_pct = [50, 0]
    nv.power_mw = [400_000.0, 400_000.0]
    s = GpuSampler(period_s=None, nvml=nv, clock=clock)
    s.start()
    clock.t += 10.0
    nv.energy_mj = [4_500_000.0, 9_000_000.0]  # +3 500 000 mJ = 3500 J, +4 000 000 mJ = 4000 J
    nv.mem_used = [70_000_000_000, 30_000_000_000]
    nv.util_pct = [100, 100]
    r = s.stop()
    assert r.available and r.reason is None
    assert r.gpu_count == 2
    assert r.duration_s == pytest.approx(10.0)
    assert r.energy_source == "counter"
    assert r.energy_j == pytest.approx(7500.0)  # 3500 + 4000 J
    assert r.mean_power_w == pytest.approx(750.0)  # 7500 J / 10 s
    assert r.peak_memory_gb == pytest.approx(70.0)  # GPU 0's 70e9 bytes
    # samples: GPU0 (50, 100) -> 75 %, GPU1 (0, 100) -> 50 %; mean over GPUs 62.5 %
    assert r.gpu_util_mean_pct == pytest.approx(62.5)
    assert [g.energy_j for g in r.gpus] == [pytest.approx(3500.0), pytest.approx(4000.0)]
    assert r.gpus[0].name == "Fake H200"
    assert nv.init_calls == 1 and nv.shutdown_calls == 1


def test_energy_by_trapezoid_when_counter_unsupported() -> None:
    nv = FakeNvml(gpus=1, energy_counter=[False])
    clock = FakeClock()
    nv.power_mw = [100_000.0]  # 100 W at t=0
    s = GpuSampler(period_s=None, nvml=nv, clock=clock)
    s.start()
    clock.t += 2.0
    nv.power_mw = [300_000.0]
    s.sample()  # 300 W at t=2
    clock.t += 2.0
    r = s.stop()  # 300 W at t=4
    # trapezoids: 2 s * (100+300)/2 = 400 J; 2 s * (300+300)/2 = 600 J -> 1000 J over 4 s
    assert r.available
    assert r.energy_source == "power_integral"
    assert r.energy_j == pytest.approx(1000.0)
    assert r.mean_power_w == pytest.approx(250.0)
    assert r.gpus[0].samples == 3
    assert r.gpus[0].peak_power_w == pytest.approx(300.0)


def test_mixed_sources_are_labelled() -> None:
    nv = FakeNvml(gpus=2, energy_counter=[True, False])
    clock = FakeClock()
    nv.power_mw = [0.0, 200_000.0]
    s = GpuSampler(period_s=None, nvml=nv, clock=clock)
    s.start()
    clock.t += 5.0
    nv.energy_mj = [1_000_000.0, 0.0]  # GPU0: 1000 J by counter
    r = s.stop()
    # GPU1: constant 200 W over 5 s = 1000 J by trapezoid; total 2000 J
    assert r.energy_source == "mixed"
    assert r.energy_j == pytest.approx(2000.0)
    assert [g.energy_source for g in r.gpus] == ["counter", "power_integral"]


def test_background_thread_samples_and_counter_energy_is_exact() -> None:
    nv = FakeNvml(gpus=1)
    nv.energy_mj = [10_000.0]
    s = GpuSampler(period_s=0.01, nvml=nv)
    s.start()
    deadline = time.monotonic() + 5.0
    while s.sample_count < 4 and time.monotonic() < deadline:  # the thread ticks every 10 ms
        time.sleep(0.01)
    assert s.sample_count >= 4  # the start sample + at least three from the thread
    nv.energy_mj = [52_000.0]  # +42 J whatever the thread timing
    r = s.stop()
    assert r.energy_j == pytest.approx(42.0)
    assert r.gpus[0].samples >= 5  # ... + the stop sample
    assert r.duration_s is not None and r.duration_s >= 0.03


class _InitFails(FakeNvml):
    def nvmlInit(self) -> None:  # noqa: N802
        raise NVMLError("NVML Shared Library Not Found")


def test_no_nvml_library_is_unavailable_not_an_error() -> None:
    s = GpuSampler(period_s=0.01, nvml=_InitFails())
    s.start()
    r = s.stop()
    assert r.available is False
    assert "NVML Shared Library Not Found" in (r.reason or "")
    for name in NULL_NUMBERS:
        assert getattr(r, name) is None
    assert r.gpu_count == 0
    cols = r.columns()
    assert cols["telemetry_available"] is False and cols["energy_j"] is None


def test_import_error_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml, "_load_nvml", no_module)
    with GpuSampler() as s:
        pass
    assert s.result.available is False
    assert "pynvml" in (s.result.reason or "")


def test_device_query_failure_is_unavailable_and_shuts_down() -> None:
    nv = FakeNvml(gpus=0)  # driver up, no devices
    s = GpuSampler(period_s=None, nvml=nv)
    s.start()
    r = s.stop()
    assert r.available is False and "no GPUs" in (r.reason or "")
    assert nv.shutdown_calls == 1


def test_real_nvml_never_raises_here() -> None:
    """On this machine (no GPU) the real pynvml path must return 'unavailable', not raise."""
    s = GpuSampler(period_s=0.01)
    s.start()
    r = s.stop()
    if not r.available:
        assert r.reason
        for name in NULL_NUMBERS:
            assert getattr(r, name) is None
    else:  # a GPU box: the numbers exist
        assert r.gpu_count >= 1


def test_trapezoid_edge_cases() -> None:
    assert trapezoid_energy_j([]) is None
    assert trapezoid_energy_j([(0.0, 500.0)]) is None
    # 3 s at 500 W, then a ramp to 700 W over 1 s: 1500 + 600 = 2100 J
    assert trapezoid_energy_j([(0.0, 500.0), (3.0, 500.0), (4.0, 700.0)]) == pytest.approx(2100.0)


def test_derive_energy_metrics_by_hand() -> None:
    # 7200 J over 10 s for 3600 output tokens: 720 W mean; 2 J/token;
    # 360 tok/s over 720 W = 0.00072 MW -> 500 000 tok/s per MW
    d = derive_energy_metrics(7200.0, 3600, 10.0)
    assert d["mean_power_w"] == pytest.approx(720.0)
    assert d["j_per_output_token"] == pytest.approx(2.0)
    assert d["output_tok_s_per_mw"] == pytest.approx(500_000.0)


def test_derive_energy_metrics_unknown_energy_is_none() -> None:
    assert derive_energy_metrics(None, 3600, 10.0) == {
        "mean_power_w": None,
        "j_per_output_token": None,
        "output_tok_s_per_mw": None,
    }
    d = derive_energy_metrics(100.0, 0, 10.0)
    assert d["j_per_output_token"] is None and d["output_tok_s_per_mw"] is None
    assert d["mean_power_w"] == pytest.approx(10.0)
