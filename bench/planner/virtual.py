"""Engine kind "virtual": any sweep on a GPU that is not at hand, through the scheduler simulation.

`engine: {kind: virtual}` with `hardware: {gpu: h200, count: 8}` and the usual server axes (model,
quantization, kv_cache_dtype, max_num_seqs, max_num_batched_tokens, enable_prefix_caching, speculative,
tensor_parallel_size, expert_parallel) runs every point of a sweep in simulated time: the deployment's
step model (bench.planner.deployment, with the calibrated or published-fit factors of the GPU), vLLM's
scheduler (bench.planner.scheduler) and the harness's own load generator and request generators
(bench.planner.traffic). Rows are ordinary rows (so `report`, `margin`, `tune` and `plan --results` work)
with `engine: virtual`; every report of such a run carries the red "estimate, not measured" banner.

Why in the planner layer: the kind needs the planner's step model, and engines sit below the planner; the
class registers itself with the engine registry when this module is imported (bench.cli imports it).
The session asks an engine with `simulated = True` for `simulate(...)` instead of sending HTTP requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from bench.config import quant as quant_registry
from bench.config.engine_spec import EngineKind, EngineSpec
from bench.config.sweep import Point, ServerSpec, Sweep
from bench.engines.base import NoProcessEngine, refuse_disagg, register_engine
from bench.errors import UserInputError
from bench.measure.client import ClientConfig
from bench.measure.load_health import LoadResult
from bench.planner import simulate as sim
from bench.planner.deployment import Deployment
from bench.planner.factors import efficiency_for, get_gpu, load_roofline_config, resolve_quant

ESTIMATE_BANNER = "estimate, not measured: the virtual engine simulates vLLM's scheduler over the planner's step model"


class VirtualEngineSpec(EngineSpec):
    """`engine:` of a virtual sweep: the router between replicas and whether the engine schedules ahead."""

    router: Literal["least_loaded", "round_robin"] = Field(
        "least_loaded", description="how requests are spread over replicas (count / tensor_parallel_size)")
    async_scheduling: bool = Field(True, description="vLLM's async scheduling (on by default since 0.14): a "
                                   "request is first seen by the step after the one running when it arrived")
    max_queue: int = Field(100_000, gt=0, description="a point stops (and its row says the deployment is "
                           "saturated) when more requests than this wait in the engines")


def catalog_hp(model: str) -> Any:
    """Hyperparameters of a catalog model, by name or hub id; one line naming the allowed ones otherwise."""
    from bench.config.catalog import load_models

    models = load_models()
    if model in models:
        return models[model].hp
    by_hub = {m.hf_id: m for m in models.values() if m.hf_id}
    if model in by_hub:
        return by_hub[model].hp
    raise UserInputError(f"server.model: the virtual engine needs a catalog model (its hyperparameters); got "
                         f"{model!r}; allowed: {', '.join(sorted(models))}")


def acceptance_length(spec: ServerSpec) -> tuple[int, float]:
    """(K, L): draft tokens and mean tokens emitted per step. A simulation has no model outputs to accept or
    reject, so speculation needs a pinned acceptance (length, or per-position rates: L = 1 + sum of the
    cumulative products)."""
    sp = spec.speculative
    if sp is None or not sp.num_speculative_tokens:
        return 0, 1.0
    k = sp.num_speculative_tokens
    if sp.acceptance_length is not None:
        return k, float(sp.acceptance_length)
    if sp.acceptance_rates is not None:
        total, p = 1.0, 1.0
        for r in sp.acceptance_rates:
            p *= r
            total += p
        return k, total
    raise UserInputError("server.speculative: the virtual engine needs acceptance_length or acceptance_rates "
                         "(a simulation cannot draw acceptance from a model's outputs)")


def sim_setup(spec: ServerSpec, sweep: Sweep) -> sim.SimSetup:
    """The deployment of one server spec on the sweep's hardware, configured as vLLM would be."""
    cfg = load_roofline_config()
    gpu = get_gpu(sweep.hardware.gpu)
    preset = quant_registry.planner_preset_name(spec.quantization) or "bf16"
    q = resolve_quant(preset, quant_registry.kv_bits_of(spec.kv_cache_dtype), cfg)
    eff, _ = efficiency_for(gpu.id, q.name, cfg, hbm_gb_s=gpu.hbm_gb_s)
    tp = spec.tensor_parallel_size
    count = sweep.gpu_count(spec)
    if count % tp:
        raise UserInputError(f"hardware.count: {count} GPUs is not a multiple of tensor_parallel_size {tp}")
    dep = Deployment(hp=catalog_hp(spec.model), gpu=gpu, quant=q, tp=tp, ep=spec.expert_parallel, eff=eff)
    k, L = acceptance_length(spec)
    engine = sweep.engine
    return sim.setup(dep, count // tp, max_num_seqs=spec.max_num_seqs, max_model_len=spec.max_model_len,
                     max_num_batched_tokens=spec.max_num_batched_tokens, prefix_caching=spec.enable_prefix_caching,
                     spec_tokens=k, acceptance_length=L,
                     async_scheduling=getattr(engine, "async_scheduling", True),
                     router=getattr(engine, "router", "least_loaded"), where="server")


@register_engine(config=EngineKind(pins_output_length=True, needs_base_url=False, one_batch_per_point=False,
                                   schema=VirtualEngineSpec))
class VirtualEngine(NoProcessEngine):
    """A server that is simulated, not started: points run in simulated time (`simulate`). Nothing runs, so
    start/stop/alive come from NoProcessEngine; no model directory is resolved (its own __init__)."""

    kind: ClassVar[str] = "virtual"
    starts_server: ClassVar[bool] = False
    uses_local_gpus: ClassVar[bool] = False
    batch: ClassVar[bool] = False
    simulated: ClassVar[bool] = True

    def __init__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> None:
        self.spec, self.engine, self.log_path, self.on_gpu = spec, engine, log_path, on_gpu
        self.model_path = f"virtual:{spec.model}"  # no directory: prompts come from the catalog vocabulary
        self.tokenizer: Any = None

    @classmethod
    def preflight(cls, specs: list[ServerSpec], sweep: Any = None) -> None:
        """Everything the real engine would refuse, before any point runs: an unknown model, a model that
        does not fit the hardware at max_model_len, a token budget below the KV block or max_num_seqs."""
        refuse_disagg(cls.kind, specs)  # P/D is simulated by `plan`, not by this engine kind
        for spec in specs:
            catalog_hp(spec.model)
            acceptance_length(spec)
            if sweep is not None:
                sim_setup(spec, sweep)

    def failure_reason(self) -> str:
        return "simulation failed"

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        raise TypeError("the virtual engine serves no HTTP endpoint; its points run through simulate()")

    def count_tokens(self) -> Callable[[str], int] | None:
        return None

    def simulate(self, sweep: Sweep, point: Point, warmup: Iterable[Any], measured: Iterable[Any],
                 cooldown: Iterable[Any], factory: Any, on_done: Callable[[Any], None] | None = None
                 ) -> tuple[LoadResult, dict[str, Any]]:
        """One point in simulated time: the load result (records in the measured schema) and the columns a
        real server's /metrics would give (preemptions, prefix-cache queries and hits) plus `error` when the
        simulation stopped at a saturated queue."""
        s = sim_setup(point.server, sweep)
        out = sim.run_point(s, point.load, warmup, measured, cooldown, factory=factory, seed=point.workload.seed,
                            max_waiting=getattr(sweep.engine, "max_queue", 100_000))
        if on_done is not None:
            for rec in out.load.records:
                if rec.measured:
                    on_done(rec)
        cols: dict[str, Any] = {
            "num_preemptions": out.preemptions, "prefix_cache_queries": out.prompt_tokens,
            "prefix_cache_hits": out.prefix_hit_tokens,
            "prefix_cache_hit_rate": out.prefix_hit_tokens / out.prompt_tokens if out.prompt_tokens else None,
            "server_generation_tokens": out.engine_output_tokens,
        }
        if out.stopped:
            cols["error"] = out.stopped
        return out.load, cols
