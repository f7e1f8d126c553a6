"""Golden accuracy: what bench.measure.client + bench.measure.loadgen + bench.measure.metrics measure against
what the simulated server was told to produce. The sim runs in its own process (no shared GIL with the client).

Told values, by hand (sim chunk i is due at slot + TTFT + i * ITL; k tokens per chunk, the last chunk
carries the remainder; n output tokens -> c = ceil(n / k) chunks):
  TTFT = 100 ms;  ITL = 10 ms per chunk gap;  E2EL = TTFT + (c - 1) * ITL;  TPOT = (c - 1) * ITL / (n - 1).
  n = 12, k = 1: c = 12, E2EL = 210 ms, TPOT = 10 ms.
  n = 10, k = 3: chunks 3+3+3+1, c = 4, E2EL = 130 ms, TPOT = 30 / 9 = 3.333 ms.
Tolerance: max(1 ms, 2% of told) (TTFT 2 ms, ITL and TPOT 1 ms). TTFT and E2EL can only be late: the sim
starts a request's clock when its handler runs, after the client's send, and never writes a chunk before its
deadline; so no sample may be below the told value (whatever the load), and the fastest sample, which carries
only the client's own overhead, must be within the tolerance above it. ITL and TPOT move both ways (a late
chunk lengthens one gap and, the sim's deadlines being absolute, shortens the next): their medians must be
within the tolerance. Why not every sample, the mean, or the median of TTFT (earlier bars): the 2 cores are
shared with other jobs, and a descheduled process (the sim's or the client's) delays a chunk by a few ms. On
the shared box 15 of 88 ITL samples were off by more than 1 ms at load average 3.8 and 28 of 88 at 10
(7.6-12.6 ms); one TTFT of 8 read 121.6 ms (the mean 3.3 ms off), and at load average 15 half the TTFTs were
3-8 ms late (median 102.7 ms) while three read 100.4 ms. A systematic client error (a wrong timestamp, a gap
counted per token, a role chunk taken for the first token) moves the fastest sample or the medians, or breaks
the floors; the counts of chunks and gaps are checked exactly. The measured TTFT also holds the HTTP round
trip and the sim's request parsing (about 0.5-0.8 ms on this machine). The timing checks run one stream at a
time: the sim makes its chunk times exact with a blocking sleep of up to 1 ms, which delays the intake of a
concurrent request by as much, so at concurrency > 1 the sim itself is only 1 ms exact.
"""

from __future__ import annotations

import math
import statistics
from itertools import chain, repeat

import pytest

from bench.config.sweep import LoadPoint, Sweep, WorkloadSpec
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.loadgen import run_load
from bench.measure.metrics import summarize
from bench.measure.nvml import GpuSampler, TelemetryResult
from bench.measure.workloads import PromptFactory, generate
from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess
from bench.sweep.run import run_sweep
from bench.sweep.session import telemetry_columns
from bench.sweep.store import load_results

TTFT_MS, ITL_MS = 100.0, 10.0
FACTORY = PromptFactory.for_vocab_size(2048)


def _tol(told_ms: float) -> float:
    return max(1.0, 0.02 * told_ms)


@pytest.fixture(scope="module")
def sims():
    started: dict[str, tuple] = {}

    def get(**kw) -> str:
        key = repr(sorted(kw.items()))
        if key not in started:
            started[key] = start_sim_subprocess(SimConfig(**{"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, **kw}))
        return started[key][1]

    yield get
    for proc, _ in started.values():
        stop_sim_subprocess(proc)


def _measure(url: str, out_len: int, n: int = 8, conc: int = 1, endpoint: str = "completions"):
    spec = WorkloadSpec(input_len=24, output_len=out_len, endpoint=endpoint)
    cfg = ClientConfig(base_url=url, model="sim", endpoint=endpoint)

    async def main():
        async with StreamingClient(cfg, count_tokens=lambda t: len(t.split())) as client:
            # one warm-up request per worker opens the keep-alive connections before measuring
            return await run_load(client.send, generate(spec, conc, FACTORY, 1), generate(spec, n, FACTORY, 2),
                                  LoadPoint(concurrency=conc, num_requests=n, warmup_requests=conc))

    res = run_async(main())
    recs = [r for r in res.records if r.measured]
    assert len(recs) == n and all(r.ok for r in recs), [r.error for r in recs]
    return recs, res


def _within(samples: list[float], told: float) -> None:
    """Two-sided noise (ITL, TPOT): the median within the tolerance."""
    assert abs(statistics.median(samples) - told) <= _tol(told), (told, sorted(samples))


def _late_only(samples: list[float], told: float) -> None:
    """One-sided noise (TTFT, E2EL): no sample early, the fastest within the tolerance (module docstring)."""
    assert told <= min(samples) <= told + _tol(told), (told, sorted(samples))


def _check_timing(recs, out_len: int, k: int) -> None:
    c = math.ceil(out_len / k)
    assert all(len(r.itl_ms) == c - 1 for r in recs)
    _late_only([r.ttft_ms for r in recs], TTFT_MS)
    _late_only([r.e2el_ms for r in recs], TTFT_MS + (c - 1) * ITL_MS)
    _within([r.tpot_ms for r in recs], (c - 1) * ITL_MS / (out_len - 1))
    _within([x for r in recs for x in r.itl_ms], ITL_MS)


def test_one_token_chunks_timing_and_exact_counts(sims):
    recs, res = _measure(sims(tokens_per_chunk=1), out_len=12)
    _check_timing(recs, 12, 1)
    for r in recs:
        assert r.usage_completion_tokens == 12 and r.client_output_tokens == 12 and len(r.chunk_ns) == 12
        assert r.chunk_tokens == [1] * 12
        assert r.usage_prompt_tokens == r.input_tokens == 24  # prompt sized exactly (sim: one word = one token)
    row = summarize(recs)
    assert row["output_tokens"] == 8 * 12 and row["input_tokens"] == 8 * 24
    assert row["token_count_mismatches"] == 0 and row["usage_missing"] == 0 and row["token_discrepancy_pct"] == 0
    # chunks 10 ms apart arrive in separate reads unless the sim or the client stalls 10 ms or more: a loaded
    # box does now and then (15-20% of chunks with 4 busy loops beside other jobs on the 2 cores); a client
    # that buffers its reads merges nearly all (11 of 12 per request)
    assert res.client_kept_up and res.coalesced_chunk_frac <= 0.5


def test_multi_token_chunks_count_tokens_not_chunks(sims):
    recs, _ = _measure(sims(tokens_per_chunk=3), out_len=10)
    _check_timing(recs, 10, 3)
    for r in recs:
        assert len(r.chunk_ns) == 4 and r.chunk_tokens == [3, 3, 3, 1]
        assert r.output_tokens == 10  # not 4: a chunk is not a token
    assert summarize(recs)["tpot_ms_p50"] == pytest.approx(30 / 9, abs=_tol(30 / 9))


def test_chat_stream_role_chunk_is_not_a_token(sims):
    # vLLM-style chat streams open with a role-only delta (empty content): it must not count as the first token.
    recs, _ = _measure(sims(tokens_per_chunk=3), out_len=10, endpoint="chat")
    _check_timing(recs, 10, 3)
    assert all(r.chunk_tokens == [3, 3, 3, 1] and r.usage_completion_tokens == 10 for r in recs)


def test_missing_usage_falls_back_to_the_client_count_and_is_reported(sims):
    recs, _ = _measure(sims(usage_mode="missing"), out_len=12, n=6)
    assert all(r.usage_completion_tokens is None and r.output_tokens == 12 for r in recs)
    row = summarize(recs)
    assert row["usage_missing"] == 6 and row["token_discrepancy_pct"] is None
    assert row["output_tokens"] == 72


def test_wrong_usage_is_reported_as_a_discrepancy(sims):
    recs, _ = _measure(sims(usage_mode="wrong", usage_offset_tokens=2), out_len=12, n=6)
    assert all(r.usage_completion_tokens == 14 and r.client_output_tokens == 12 for r in recs)
    row = summarize(recs)
    # the server's usage is the count of record; the client count disagrees on every request
    assert row["output_tokens"] == 6 * 14 and row["token_count_mismatches"] == 6
    assert row["token_discrepancy_pct"] == pytest.approx(100 * (12 - 14) / 14)


def test_open_loop_point_keeps_time(sims):
    url = sims(tokens_per_chunk=1)
    spec = WorkloadSpec(input_len=8, output_len=5)
    lp = LoadPoint(request_rate=50.0, num_requests=30, warmup_requests=3)

    async def main():
        async with StreamingClient(ClientConfig(base_url=url, model="sim")) as client:
            return await run_load(client.send, generate(spec, 5, FACTORY, 1), generate(spec, 30, FACTORY, 2), lp,
                                  cooldown=generate(spec, 20, FACTORY, 3))

    res = run_async(main())
    # timer wake-up granularity is ~1 ms on an idle box, but a loaded CI box (load average 3.8 on 2 cores) read
    # 2.13 ms against the old bound of 2; 5 ms is a quarter of the mean gap (20 ms at 50/s). A sender that waits
    # for answers (140 ms each here) or accumulates ~1 ms of sleep lateness per send (~15 ms at the median of 30)
    # is still far above it. p99 is at the mercy of a shared CPU.
    assert res.send_lag_p50_ms < 5
    assert 20 < res.delivered_rate < 90  # 30 Poisson arrivals at 50/s


def test_sweep_rows_carry_load_health_server_metrics_and_say_telemetry_unavailable(tmp_path, sims):
    url = sims(max_concurrent_streams=4)
    sweep = Sweep(
        name="acc", engine={"kind": "openai", "base_url": url, "ignore_eos": True},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1}, server={"model": "glm-4.5-tiny"},
        load={"concurrency": [4], "num_requests": 12, "warmup_requests": 4},
        workloads=[{"name": "w", "input_len": 16, "output_len": 6}],
    )
    summary = run_sweep(sweep, out_root=tmp_path)
    row = load_results(summary.run_dir).iloc[0].to_dict()
    assert row["status"] == "ok" and row["input_tokens"] == 12 * 16 and row["output_tokens"] == 12 * 6
    assert row["telemetry_available"] is False or row["telemetry_available"] == 0
    assert row["telemetry_reason"].startswith("not measured")
    for col in ("energy_j", "j_per_output_token", "output_tok_s_per_mw", "mean_power_w"):
        assert row[col] is None or math.isnan(row[col])
    assert row["server_metrics_available"]
    # scraped at the end of the measured phase while the cool-down still holds streams: not an idle server
    assert row["kv_cache_usage_frac"] > 0
    assert row["server_generation_tokens"] >= 12 * 6  # every measured token (plus overlapping warm-up / cool-down)
    assert row["client_kept_up"] and row["load_mode"] == "concurrency" and row["stop_reason"] == "count"


class _FakeNvml:
    """One GPU at a constant 400 W; energy counter absent, so energy comes from the power integral."""

    def nvmlInit(self): pass  # noqa: E704
    def nvmlShutdown(self): pass  # noqa: E704
    def nvmlDeviceGetCount(self): return 1  # noqa: E704
    def nvmlDeviceGetHandleByIndex(self, i): return i  # noqa: E704
    def nvmlDeviceGetName(self, h): return "FakeGPU"  # noqa: E704
    def nvmlDeviceGetPowerUsage(self, h): return 400_000  # mW  # noqa: E704
    def nvmlDeviceGetTotalEnergyConsumption(self, h): raise RuntimeError("not supported")  # noqa: E704

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": 2e9})()

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": 50})()


def test_telemetry_columns_with_a_fake_gpu_by_hand():
    t = chain([0.0, 0.0], repeat(10.0))  # start and first sample at 0 s, last sample and stop at 10 s
    sampler = GpuSampler(period_s=None, nvml=_FakeNvml(), clock=lambda: next(t))
    sampler.start()
    tel = sampler.stop()
    # measured window 2 s, 1200 output tokens: energy = 400 W x 2 s = 800 J; 800 / 1200 = 0.6667 J/token;
    # tok/s per MW = (1200 / 2) / (400 W / 1e6) = 1.5e6
    cols = telemetry_columns(tel, {"duration_s": 2.0, "output_tokens": 1200})
    assert cols["telemetry_available"] is True and cols["mean_power_w"] == pytest.approx(400.0)
    assert cols["energy_j"] == pytest.approx(800.0)
    assert cols["j_per_output_token"] == pytest.approx(800 / 1200)
    assert cols["output_tok_s_per_mw"] == pytest.approx(1.5e6)
    off = telemetry_columns(TelemetryResult(available=False, reason="NVML unavailable: x"), {"duration_s": 2.0,
                                                                                         "output_tokens": 10})
    assert off["telemetry_available"] is False and off["energy_j"] is None and off["j_per_output_token"] is None


def _send_all(url: str, n: int, conc: int = 1, timeout_s: float = 30.0, **cfg_kw):
    spec = WorkloadSpec(input_len=4, output_len=6)
    cfg = ClientConfig(base_url=url, model="sim", timeout_s=timeout_s, **cfg_kw)

    async def main():
        async with StreamingClient(cfg) as client:
            lp = LoadPoint(concurrency=conc, num_requests=n)
            res = await run_load(client.send, [], generate(spec, n, FACTORY), lp)
            return res, len(client._open)

    return run_async(main())


def test_keep_alive_reuses_one_connection_per_worker(sims):
    res, open_conns = _send_all(sims(ttft_ms=1, itl_ms=1), n=10, conc=2)
    assert all(r.ok for r in res.records) and open_conns == 2


def test_server_errors_cuts_refusals_and_timeouts_become_request_errors(sims):
    res, _ = _send_all(sims(error_rate=1.0), n=3)
    assert all(r.http_status == 500 and r.error.startswith("HTTP 500: ") for r in res.records)
    assert all("error_rate" in r.error for r in res.records)  # the server's message is kept
    res, _ = _send_all(sims(cut_rate=1.0), n=3)
    # the sim drops the connection after half of the 6 chunks: 3 chunks arrive, then the reset
    assert all(not r.ok and "ConnectionResetError" in r.error and len(r.chunk_ns) == 3 for r in res.records)
    res, _ = _send_all("http://127.0.0.1:9", n=2)  # nothing listens on the discard port
    assert all(not r.ok and r.error for r in res.records)
    res, _ = _send_all(sims(ttft_ms=2000), n=1, timeout_s=0.3)
    assert res.records[0].error == "timeout after 0.3 s"
