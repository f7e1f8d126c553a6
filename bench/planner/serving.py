"""Serving at a concurrency: the raw steps of one curve point and the latency formulas.

The serving model is stated once, in bench.planner.roofline's docstring; this module evaluates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from bench.planner.deployment import Deployment, MemoryFit, StepRaw, memory_fit


@dataclass(frozen=True)
class PointRaw:
    """Everything about one curve point that does not depend on the fitted factors."""

    concurrency_per_replica: float
    batch: float
    osl: int
    decode: StepRaw
    mixed: StepRaw  # prefill of one prompt next to batch-1 decodes
    prefill_marginal: StepRaw  # the prompt's own compute and communication
    tokens_per_step: float = 1.0  # tokens each decoding sequence emits per step (speculation: L)
    wave: StepRaw | None = None  # burst: the step that prefills one prompt of the wave (None = steady state)


def point_raw(dep: Deployment, isl: int, osl: int, concurrency_per_replica: float, max_seqs: int,
              spec_tokens: int = 0, acceptance_length: float = 1.0, *, cached_share: float = 0.0,
              burst: bool = False) -> PointRaw:
    """Raw steps of one curve point; with speculation (K = spec_tokens, L = acceptance_length) a decode
    step is the verify step over B x (K+1) tokens plus K draft passes, and it emits B x L tokens.
    `cached_share` c (prefix-cache hits, issue 15): only (1 - c) x isl prompt tokens are prefilled; the
    context the decode reads is still the whole prompt. `burst`: the concurrency is ONE wave of N
    requests sent at once (`wave` = the step prefilling one of them next to (N-1)/2 decodes, the mean
    over the wave); only when all N fit at once (N <= max_seqs), else the steady state is kept."""
    n_pre = isl * (1.0 - cached_share)
    batch = float(min(concurrency_per_replica, max_seqs))
    ctx = isl + osl / 2.0
    dec = max(batch - 1.0, 0.0)
    return PointRaw(
        concurrency_per_replica=concurrency_per_replica, batch=batch, osl=osl,
        decode=dep.spec_step_raw(batch, ctx, spec_tokens=spec_tokens),
        mixed=dep.spec_step_raw(dec, ctx, n_pre=n_pre, spec_tokens=spec_tokens),
        prefill_marginal=_marginal(dep, n_pre), tokens_per_step=float(acceptance_length),
        wave=_wave(dep, batch, ctx, n_pre, spec_tokens) if burst and concurrency_per_replica <= max_seqs else None,
    )


def replica_raw(dep: Deployment, isl: int, osl: int, concurrency: float, replicas: int, spec_tokens: int = 0,
                acceptance_length: float = 1.0, *, cached_share: float = 0.0,
                burst: bool = False) -> tuple[MemoryFit, PointRaw]:
    """The memory fit of one sequence of isl + osl tokens and the raw steps at `concurrency` split
    evenly over `replicas` (at least one sequence per replica even where the memory model says none
    fits: a measured run that did fit is still graded; callers check `MemoryFit.fits`)."""
    fit = memory_fit(dep, isl + osl)
    raw = point_raw(dep, isl, osl, concurrency / replicas, max(fit.max_concurrent_seqs, 1), spec_tokens,
                    acceptance_length, cached_share=cached_share, burst=burst)
    return fit, raw


def _wave(dep: Deployment, n: float, ctx: float, n_pre: float, spec_tokens: int) -> StepRaw:
    """Mean step of a burst's prefill wave: prompt i (0..N-1) is prefilled next to the i sequences
    prefilled before it, i.e. (N-1)/2 decodes on average."""
    mean_dec = max(n - 1.0, 0.0) / 2.0
    return dep.spec_step_raw(mean_dec, ctx, n_pre=n_pre, spec_tokens=spec_tokens)


def _marginal(dep: Deployment, isl: float) -> StepRaw:
    full = dep.step_raw(0.0, 0.0, n_pre=isl)
    return StepRaw(memory_s=0.0, compute_s=full.compute_s, comm_s=full.comm_s)


class Latencies(NamedTuple):
    tpot_s: float
    ttft_s: float
    e2el_s: float
    served_e2el_s: float  # E2EL without queueing (burst: the wave's duration): what throughput is computed from


def latencies_s(raw: PointRaw, bw_eff: float, compute_eff: float, overhead_s: float) -> Latencies:
    """The single place the serving formulas live (`_loss` is the same, vectorized for the fit; a
    measured closed-loop point is never a burst)."""
    b = raw.batch
    if raw.wave is not None:
        return burst_latencies_s(b, raw.osl, raw.tokens_per_step, raw.wave.time_s(bw_eff, compute_eff, overhead_s),
                                 raw.decode.time_s(bw_eff, compute_eff, overhead_s))
    marginal = raw.prefill_marginal.compute_s / compute_eff + raw.prefill_marginal.comm_s
    tpot = (raw.decode.time_s(bw_eff, compute_eff, overhead_s) / raw.tokens_per_step
            + max(b - 1.0, 0.0) / raw.osl * marginal)
    ttft0 = raw.mixed.time_s(bw_eff, compute_eff, overhead_s)
    served = ttft0 + (raw.osl - 1) * tpot
    wait = max(raw.concurrency_per_replica / b - 1.0, 0.0) * served
    return Latencies(tpot, ttft0 + wait, served + wait, served)


def burst_latencies_s(n: float, osl: int, tokens_per_step: float, wave_step_s: float,
                      decode_step_s: float) -> Latencies:
    """One wave of N requests sent at once (bench.planner.roofline states the model): prompts are
    prefilled one per wave step w (FCFS), every sequence already prefilled emits L tokens per step,
    then decode steps d (batch N) emit L tokens each.

    Request i (0-based) gets its first token at (i+1) w and finishes at N w + (OSL-1-L(N-1-i)) d / L,
    so the wave lasts N w + (OSL-1) d / L (the last prompt) and
      mean TTFT = (N+1)/2 x w,  mean TPOT = d/L + m (w - d) / (OSL-1) with m = (N-1)/2,
      throughput = N x OSL / (N w + (OSL-1) d / L)  (served_e2el_s = the wave's duration).
    """
    m, lpt = max(n - 1.0, 0.0) / 2.0, max(osl - 1, 1)
    duration = n * wave_step_s + (osl - 1) * decode_step_s / tokens_per_step
    ttft = (n + 1.0) / 2.0 * wave_step_s
    tpot = decode_step_s / tokens_per_step + m * (wave_step_s - decode_step_s) / lpt
    return Latencies(tpot, ttft, ttft + (osl - 1) * tpot, duration)
