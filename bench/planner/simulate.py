"""One simulated point: a deployment (bench.planner.deployment) configured as vLLM would be, its
schedulers (bench.planner.scheduler) and the harness's client (bench.planner.traffic).

Why a module of its own: `plan` (closed-loop curves at fixed lengths) and the `virtual` engine (any
sweep point, any workload) build the same engines the same way; the vLLM defaults and the checks the
real engine would make before it starts live here, once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.config.load_spec import LoadPoint
from bench.errors import UserInputError
from bench.measure.client import RequestSpec
from bench.measure.prompts import PromptFactory
from bench.measure.sessions import Session
from bench.planner.cluster import Cluster
from bench.planner.deployment import Deployment, MemoryFit, memory_fit
from bench.planner.factors import GpuPeaks
from bench.planner.scheduler import EngineConfig, EngineSim, SimRequest
from bench.planner.traffic import SimClient, SimOutcome
from bench.units import ms_to_s

# --- per-step latency -------------------------------------------------------------------------------


def _bucket(x: float) -> int:
    """Cache key of a token count: exact below 64, else 1/32 steps of log2 (2.2% wide buckets)."""
    if x < 64:
        return int(x)
    return 64 + int(math.log2(x) * 32)


class StepTimer:
    """Seconds of one engine step from the planner's step model (bench.planner.deployment.step_raw) and
    the engine factors; memoized on bucketed arguments so a simulation of 10^4 steps costs ~10^3 model
    evaluations. `draft` adds speculative decoding's K draft passes (Deployment.draft_raw)."""

    def __init__(self, dep: Deployment, spec_tokens: int = 0, overhead_s: float | None = None) -> None:
        e = dep.eff
        self.dep, self.k = dep, spec_tokens
        self.bw, self.ce = e.bandwidth_efficiency, e.compute_efficiency
        self.overhead_s = ms_to_s(e.step_overhead_ms) if overhead_s is None else overhead_s
        self._cache: dict[tuple[int, int, int, int], float] = {}

    def __call__(self, n_dec: int, ctx: float, chunks: Sequence[tuple[float, float]] = ()) -> float:
        """Seconds of a step decoding n_dec sequences at mean context ctx and prefilling `chunks` ((offset,
        tokens) per prompt). Memo key: decodes, context, prefill tokens and the chunks' causal attention pairs
        sum((o + n)^2 - o^2) / 2, each bucketed (the first step in a bucket is priced exactly)."""
        n_pre = sum(n for _, n in chunks)
        pairs = sum((o + n) * (o + n) - o * o for o, n in chunks) / 2.0
        key = (n_dec, _bucket(ctx) if n_dec else 0, _bucket(n_pre), _bucket(pairs))
        t = self._cache.get(key)
        if t is None:
            raw = self.dep.step_raw(n_dec, ctx, spec_tokens=self.k, chunks=list(chunks))
            if self.k and n_dec:
                raw = raw.plus(self.dep.draft_raw(n_dec, ctx, self.k))
            t = raw.time_s(self.bw, self.ce, self.overhead_s)
            self._cache[key] = t
        return t



class StepJitter:
    """Multipliers of step times: lognormal, mean 1, coefficient of variation `cv`, one per step in order from a
    seeded generator, so a simulation repeats exactly. A macro step (`EngineSim._span`) peeks at the next ones
    and consumes those of the steps it keeps: the timeline is the same with or without macro steps. Lognormal:
    a step is never much faster than its kernels allow, but can be held up by a lot (a stalled core)."""

    BATCH = 4096

    def __init__(self, cv: float, seed: int) -> None:
        import numpy as np

        self.sigma = math.sqrt(math.log1p(cv * cv))
        self.rng = np.random.default_rng(seed)
        self.buf = self._draw(self.BATCH)
        self.pos = 0

    def _draw(self, n: int) -> Any:
        return self.rng.lognormal(-self.sigma * self.sigma / 2.0, self.sigma, n)

    def peek(self, n: int) -> Any:
        """The next n multipliers, not consumed."""
        import numpy as np

        if self.pos + n > len(self.buf):
            self.buf = np.concatenate([self.buf[self.pos:], self._draw(max(n, self.BATCH))])
            self.pos = 0
        return self.buf[self.pos: self.pos + n]

    def advance(self, n: int) -> None:
        self.pos += n

    def one(self) -> float:
        v = float(self.peek(1)[0])
        self.advance(1)
        return v


GIB_PER_DEVICE_LARGE = 160  # vLLM: >= 160 GiB per device (B200/B300) -> the largest batch defaults
GIB_PER_DEVICE_HOPPER = 70  # >= 70 GiB and not an A100 (H100, H200, H20) -> larger defaults


def vllm_default_batched_tokens(gpu: GpuPeaks, world_size: int = 1) -> int:
    """vLLM's default `max_num_batched_tokens` for its OpenAI server (vllm/engine/arg_utils.py
    `get_batch_defaults`, vLLM 0.32, read 2026-12-04): CPU 2048 x world size; a device with >= 160 GiB
    16384; >= 70 GiB and not an A100 8192; any other GPU 2048."""
    if gpu.is_cpu_standin:
        return 2048 * world_size
    if gpu.memory_gb >= GIB_PER_DEVICE_LARGE:
        return 16384
    if gpu.memory_gb >= GIB_PER_DEVICE_HOPPER and "a100" not in gpu.id.lower():
        return 8192
    return 2048


def vllm_default_block_size(gpu: GpuPeaks) -> int:
    """KV block size: 16 tokens on GPUs (vLLM's CacheConfig default), 128 on the CPU backend (its
    attention kernels page in 128-token blocks; see configs/sweeps/agentic-cpu.yaml)."""
    return 128 if gpu.is_cpu_standin else 16


@dataclass(frozen=True)
class SimSetup:
    """A deployment configured for simulation: scheduler limits, KV blocks and how many schedulers."""

    dep: Deployment
    engine: EngineConfig
    replicas: int
    fit: MemoryFit
    max_model_len: int
    router: str = "least_loaded"

    @property
    def schedulers(self) -> int:
        return self.replicas * self.dep.dp_attention


def setup(dep: Deployment, replicas: int, *, max_num_seqs: int, max_model_len: int,
          max_num_batched_tokens: int | None = None, block_size: int | None = None, prefix_caching: bool = False,
          spec_tokens: int = 0, acceptance_length: float = 1.0, async_scheduling: bool = True,
          router: str = "least_loaded", where: str = "server") -> SimSetup:
    """Configure the engines as vLLM would, refusing what vLLM would refuse (one line, exit 2)."""
    block = block_size or vllm_default_block_size(dep.gpu)
    budget = max_num_batched_tokens or vllm_default_batched_tokens(dep.gpu, dep.tp)
    if budget < block:
        raise UserInputError(f"{where}.max_num_batched_tokens: must be at least the KV block size {block} "
                             f"(got {budget})")
    if budget < max_num_seqs * (spec_tokens + 1):
        raise UserInputError(f"{where}.max_num_batched_tokens: must be at least max_num_seqs x (K+1) = "
                             f"{max_num_seqs * (spec_tokens + 1)} (got {budget})")
    fit = memory_fit(dep, max_model_len)
    if fit.kv_budget_gib_per_gpu <= 0 or fit.kv_capacity_tokens < max_model_len:
        raise UserInputError(
            f"{where}.model: does not fit: {fit.weights_gib_per_gpu:.1f} GiB of weights per GPU leave "
            f"{max(fit.kv_budget_gib_per_gpu, 0):.1f} GiB of {fit.usable_gib_per_gpu:.1f} usable for KV, "
            f"{fit.kv_capacity_tokens} tokens per replica; max_model_len {max_model_len} needs more "
            "(fewer tokens, more GPUs, a smaller quantization or an FP8 KV cache)")
    blocks = fit.kv_capacity_tokens // dep.dp_attention // block
    cfg = EngineConfig(max_num_seqs=max(max_num_seqs // dep.dp_attention, 1), max_num_batched_tokens=budget,
                       num_blocks=int(blocks), block_size=block, prefix_caching=prefix_caching,
                       spec_tokens=spec_tokens, acceptance_length=acceptance_length,
                       async_scheduling=async_scheduling, frontend_s=ms_to_s(dep.eff.frontend_ms))
    return SimSetup(dep=dep, engine=cfg, replicas=replicas, fit=fit, max_model_len=max_model_len, router=router)


def engines(s: SimSetup, first_index: int = 0) -> list[EngineSim]:
    """The schedulers of a setup: one per replica, or per DP attention group (its step priced with every
    group as loaded as it is: the groups run their steps in lockstep for the MoE all-to-all). Indices start
    at `first_index` (a disaggregated cluster numbers its two pools in one list)."""
    timer = StepTimer(s.dep, spec_tokens=s.engine.spec_tokens)
    d = s.dep.dp_attention
    step = timer if d == 1 else (lambda n, c, ch: timer(n * d, c, list(ch) * d))
    cv = s.dep.eff.step_jitter_cv

    def jitter(i: int) -> StepJitter | None:  # the groups of one replica share draws: they step in lockstep
        return StepJitter(cv, seed=first_index + i // d) if cv > 0 else None

    return [EngineSim(s.engine, step, first_index + i, jitter(i)) for i in range(s.schedulers)]


def cluster(s: SimSetup) -> Cluster:
    """The engines of a setup behind its router."""
    return Cluster(engines(s), router=s.router)


# --- requests -------------------------------------------------------------------------------------------


def _block_hashes(tokens: list[str], block: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks (vLLM's prefix-cache keys: a block's hash covers its parent)."""
    out, h = [], 0
    # the full blocks, in order (a partial last one is dropped)
    for chunk in zip(*[iter(tokens)] * block, strict=False):
        h = hash((h, chunk))
        out.append(h)
    return tuple(out)


class RequestMaker:
    """RequestSpec -> SimRequest. With prefix caching, a prompt's tokens are its words (exact for the
    word-level vocabularies the harness builds; the same text gives the same blocks, which is all a prefix
    cache compares); without it no hashing is done."""

    def __init__(self, s: SimSetup, factory: PromptFactory | None) -> None:
        self.s, self.factory = s, factory
        self.block = s.engine.block_size
        self.caching = s.engine.prefix_caching

    def __call__(self, spec: RequestSpec) -> SimRequest:
        if spec.input_len + spec.output_len > self.s.max_model_len:
            raise UserInputError(f"workload: a request of {spec.input_len} + {spec.output_len} tokens exceeds "
                                 f"max_model_len {self.s.max_model_len}")
        if not self.caching:
            return SimRequest(spec.input_len, spec.output_len)
        text = spec.prompt
        if text is None and spec.messages is not None:
            text = self.factory.render_chat(spec.messages) if self.factory else " ".join(
                m["content"] for m in spec.messages)
        tokens = (text or "").split()
        block = self.block

        def out_hashes(n: int, tokens: list[str] = tokens, spec: RequestSpec = spec) -> tuple[int, ...]:
            return _block_hashes(tokens + _answer_words(spec, n), block)

        return SimRequest(spec.input_len, spec.output_len, hashes=_block_hashes(tokens, block),
                          out_hashes=out_hashes)


def _answer_words(spec: RequestSpec, n: int) -> list[str]:
    """The words a simulated answer streams: deterministic per session and turn, so a next turn that folds
    the answer back into its prompt finds the answer's blocks in the prefix cache."""
    rng = random.Random(((spec.session_id or 0) * 1_000_003 + (spec.turn or 0)) * 7 + n)
    return rng.choices(_ANSWER_WORDS, k=n)


_ANSWER_WORDS = [f"a{i}" for i in range(4096)]


def answer_text(session: Session, turn: int, n: int) -> str:
    spec = RequestSpec(prompt=None, input_len=0, output_len=n, session_id=session.session_id, turn=turn + 1)
    return " ".join(_answer_words(spec, n))


def fixed_requests(isl: int, osl: int) -> Iterator[RequestSpec]:
    """An endless stream of requests of fixed lengths without text (plan curves, no prefix caching)."""
    while True:
        yield RequestSpec(prompt=None, input_len=isl, output_len=osl)


def run_point(s: SimSetup, lp: LoadPoint, warmup: Iterable[Any], measured: Iterable[Any],
              cooldown: Iterable[Any] | None, factory: PromptFactory | None = None, seed: int = 0,
              max_waiting: int = 100_000) -> SimOutcome:
    """Simulate one point: the load point's phases and arrivals over fresh engines."""
    client = SimClient(cluster(s), lp, RequestMaker(s, factory), seed=seed, answer=answer_text,
                       max_waiting=max_waiting, max_sim_s=max(lp.timeout_s * 100, 3_600.0))
    return client.run(warmup, measured, cooldown)


# --- plan curves ----------------------------------------------------------------------------------------

VLLM_DEFAULT_MAX_NUM_SEQS_GPU = 1024  # vllm/engine/arg_utils.py get_batch_defaults: >= 70 GiB GPUs (API server)
VLLM_DEFAULT_MAX_NUM_SEQS_SMALL = 256  # other GPUs
VLLM_DEFAULT_MAX_NUM_SEQS_CPU = 128  # CPU, per world-size unit


def vllm_default_max_num_seqs(gpu: GpuPeaks, world_size: int = 1) -> int:
    """vLLM's default `max_num_seqs` for its OpenAI server (same source as `vllm_default_batched_tokens`)."""
    if gpu.is_cpu_standin:
        return VLLM_DEFAULT_MAX_NUM_SEQS_CPU * world_size
    if gpu.memory_gb >= GIB_PER_DEVICE_HOPPER and "a100" not in gpu.id.lower():
        return VLLM_DEFAULT_MAX_NUM_SEQS_GPU
    return VLLM_DEFAULT_MAX_NUM_SEQS_SMALL


def plan_requests(concurrency: int, burst: bool, schedulers: int = 1) -> tuple[int, int]:
    """(measured, warm-up) requests a plan point simulates: a burst is one wave of `concurrency`; a steady
    state 3 waves and at least 60 requests per scheduler (at most 2,000; fewer per scheduler and the
    window's edges, a wave started but not finished, move throughput by several percent) after one wave of
    warm-up, as the harness measures."""
    if burst:
        return concurrency, 0
    return min(max(3 * concurrency, 60 * schedulers), 2000), concurrency


def simulate_curve_point(s: SimSetup, isl: int, osl: int, concurrency: int, *, cached_share: float = 0.0,
                         burst: bool = False, requests: int | None = None, warmup: int | None = None,
                         cooldown: bool | None = None, seed: int = 0, engines: Cluster | None = None,
                         gpu_count: int | None = None) -> dict[str, Any]:
    """One closed-loop point at fixed lengths: the row bench.measure.metrics.summarize makes of the
    simulated records (every latency percentile, window throughput), plus the simulation's own counts.
    Defaults are the harness's protocol (`plan_requests`, cool-down on); a published run replays its own
    tool's (`requests` = its num_prompts, no warm-up, no cool-down: vLLM's `bench serve`). `engines`: a
    cluster built elsewhere (the disaggregated pools of bench.planner.disagg; `s` is then the pool that
    decodes) over `gpu_count` GPUs in all."""
    from bench.measure.metrics import summarize

    measured, warm = plan_requests(concurrency, burst, s.schedulers)
    measured = measured if requests is None else requests
    warm = warm if warmup is None else warmup
    lp = LoadPoint(concurrency=concurrency, num_requests=measured, warmup_requests=warm,
                   cooldown=(not burst) if cooldown is None else cooldown, timeout_s=86_400.0)
    shared = tuple(range(1, int(cached_share * isl) // s.engine.block_size + 1)) if cached_share > 0 else ()

    def make(spec: RequestSpec) -> SimRequest:
        return SimRequest(spec.input_len, spec.output_len, hashes=shared)

    client = SimClient(engines or cluster(s), lp, make, seed=seed, max_sim_s=1e7)
    out = client.run(fixed_requests(isl, osl), fixed_requests(isl, osl), fixed_requests(isl, osl))
    row = summarize(out.load.records, gpu_count=gpu_count or s.replicas * s.dep.tp)
    row.update(sim_steps=out.steps, sim_preemptions=out.preemptions, sim_stopped=out.stopped,
               sim_mean_decode_batch=out.engine_output_tokens / max(out.steps, 1) / s.engine.acceptance_length)
    return row
