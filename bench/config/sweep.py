"""Typed configuration: sweep YAML -> pydantic models -> deterministic list of points.

Why pydantic with `extra="forbid"`: a typo in a sweep file (`max_num_seq`) must fail loudly
with the field name and the allowed values, not silently fall back to a default and produce
a benchmark of the wrong thing. `load_sweep` turns every validation problem into a one-line
`UserInputError` naming the file and the field.

A *point* is one measurement. Points that share a `ServerSpec` share one engine start; the
`server_hash` groups them and the `point_id` (hash of the whole resolved point) lets a run be
resumed without re-measuring finished points.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from bench.config import quant as quant_registry
from bench.config.base import StrictModel, format_validation_error, read_yaml, stable_hash
from bench.config.hardware import TCO_TIER, load_hardware
from bench.config.slo import Slo
from bench.errors import UserInputError

DTYPES = ("auto", "bfloat16", "float16", "float32")
# Accepted names come from THE registry (bench.config.quant); None = unquantized.
QUANTIZATIONS: tuple[str | None, ...] = tuple(
    None if q == quant_registry.NONE else q for q in quant_registry.QUANTIZATIONS
)
KV_CACHE_DTYPES = tuple(quant_registry.KV_CACHE_DTYPES)
ENDPOINTS = ("completions", "chat")



@dataclass(frozen=True)
class EngineKind:
    """What a sweep file must give, and what it defaults to, for one `engine.kind`.

    Only the config-side facts live here (config must not import engines); the class that runs
    each kind is in bench.engines.registry, which checks that it knows exactly these kinds.
    """

    pins_output_length: bool  # default of engine.ignore_eos: send ignore_eos/min_tokens
    needs_base_url: bool  # serves through an endpoint that already runs
    one_batch_per_point: bool  # a point is one offline batch: one concurrency label, no request rate


ENGINE_KINDS: dict[str, EngineKind] = {
    "vllm": EngineKind(pins_output_length=True, needs_base_url=False, one_batch_per_point=False),
    "openai": EngineKind(pins_output_length=False, needs_base_url=True, one_batch_per_point=False),
    "vllm-offline": EngineKind(pins_output_length=False, needs_base_url=False, one_batch_per_point=True),
}
EngineKindName = Literal["vllm", "openai", "vllm-offline"]
if set(get_args(EngineKindName)) != set(ENGINE_KINDS):  # pragma: no cover - a bug in this file
    raise RuntimeError("EngineKindName and ENGINE_KINDS name different engine kinds")


class EngineSpec(StrictModel):
    """Which engine serves the points: a vLLM server we start, or an endpoint that already runs."""

    kind: EngineKindName = Field(
        "vllm", description="vllm: start a server; openai: an endpoint at base_url; vllm-offline: LLM.generate batch"
    )
    startup_timeout_s: float = Field(600.0, gt=0)
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE, applied only on CPU")
    cpu_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="applied only on CPU")
    # kinds that need a base_url (openai): an already-running server or a provider API.
    base_url: str | None = Field(None, description=(
        "a server root (http://host:8000, or a proxy prefix; /v1/... is appended) or an OpenAI-SDK-style API root "
        "whose last segment is a version (https://api.example.com/v1, .../api/paas/v4; only /completions or "
        "/chat/completions is appended). Redirects are not followed."))
    ca_file: str | None = Field(None, description="https: PEM CA bundle to trust instead of the system store")
    verify_tls: bool = Field(True, description="https: False skips certificate checks (self-signed test servers)")
    api_key_env: str | None = Field(None, description="name of the env var holding the API key")
    served_model_name: str | None = None
    ignore_eos: bool | None = Field(
        None, description="send vLLM's ignore_eos/min_tokens to pin output length; default on for vllm, off for openai"
    )

    @property
    def pin_output_length(self) -> bool:
        return self.ignore_eos if self.ignore_eos is not None else self.capabilities.pins_output_length

    @property
    def capabilities(self) -> EngineKind:
        return ENGINE_KINDS[self.kind]

    @model_validator(mode="after")
    def _check_base_url(self) -> EngineSpec:
        if self.capabilities.needs_base_url and not self.base_url:
            raise ValueError(f"engine.base_url is required when engine.kind is {self.kind!r}")
        return self


class ServerSpec(StrictModel):
    """Everything that needs a server restart when it changes."""

    model: str
    dtype: str = "bfloat16"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int = Field(2048, gt=0)
    max_num_seqs: int = Field(32, gt=0)
    max_num_batched_tokens: int | None = Field(None, gt=0)
    enable_prefix_caching: bool = False
    tensor_parallel_size: int = Field(1, gt=0)
    expert_parallel: bool = False
    load_format: str = "dummy"
    enforce_eager: bool = True

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {v!r})")
        return v

    @field_validator("quantization")
    @classmethod
    def _quant(cls, v: str | None) -> str | None:
        q = quant_registry.lookup(v)
        if q is None:
            allowed = ", ".join(quant_registry.QUANTIZATIONS)
            raise ValueError(f"quantization must be one of {allowed} (got {v!r})")
        return None if q.name == quant_registry.NONE else q.name

    @field_validator("kv_cache_dtype")
    @classmethod
    def _kv(cls, v: str) -> str:
        if v not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)} (got {v!r})")
        return v

    @property
    def server_hash(self) -> str:
        return stable_hash(self.model_dump())


class WorkloadSpec(StrictModel):
    """How prompts and output lengths are generated (see bench/workloads.py for semantics)."""

    name: str = "fixed"
    kind: Literal["fixed", "ranged", "chat", "prefix", "trace"] = "fixed"
    input_len: int = Field(128, gt=0)
    output_len: int = Field(64, gt=0)
    range_ratio: float = Field(0.0, ge=0, lt=1)
    # chat-like lognormal lengths
    input_sigma: float = Field(0.8, gt=0)
    output_sigma: float = Field(0.6, gt=0)
    # prefix-sharing
    num_prefixes: int = Field(4, gt=0)
    prefix_len: int = Field(256, gt=0)
    reuse_ratio: float = Field(1.0, ge=0, le=1)
    # trace replay
    trace_path: str | None = None
    seed: int = 0
    endpoint: Literal["completions", "chat"] = "completions"


class LoadPoint(StrictModel):
    """One arrival pattern: closed-loop `concurrency`, or open-loop `request_rate` (req/s)."""

    concurrency: int | None = Field(None, gt=0)
    request_rate: float | None = Field(None, gt=0)
    burstiness: float = Field(1.0, gt=0, description="gamma shape; 1.0 = Poisson")
    num_requests: int = Field(32, gt=0)
    warmup_requests: int = Field(0, ge=0)
    duration_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    max_concurrency: int | None = Field(None, gt=0, description="cap on in-flight requests for rate mode")
    ramp_s: float | None = Field(None, gt=0, description="ramp-up seconds (requests sent during it are warm-up)")
    ramp_start_rate: float | None = Field(None, ge=0, description="rate mode: req/s at the start of the ramp")
    cooldown: bool = Field(True, description="keep the load on (unmeasured) until the last measured request ends")

    @property
    def effective_warmup(self) -> int:
        """Warm-up requests actually sent: in closed loop at least one full wave (the concurrency).

        The stream is continuous, so with fewer warm-up requests than workers the first measured
        requests start in the same wave as the warm-up, on a server that has not yet seen a batch
        that large (on vLLM's CPU build the first such batch can stall the whole wave for ~1 s).
        `warmup_requests: 0` still means no warm-up at all.
        """
        if self.warmup_requests and self.concurrency:
            return max(self.warmup_requests, self.concurrency)
        return self.warmup_requests

    @model_validator(mode="after")
    def _one_mode(self) -> LoadPoint:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency or request_rate")
        if self.ramp_start_rate is not None and (self.request_rate is None or self.ramp_s is None):
            raise ValueError("ramp_start_rate needs request_rate and ramp_s")
        return self


class LoadMatrix(StrictModel):
    """Load axes of a sweep. Lists expand; each concurrency and each rate is one point."""

    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    burstiness: float = Field(1.0, gt=0)
    num_requests: int = Field(32, gt=0)
    warmup_requests: int = Field(2, ge=0)
    duration_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    max_concurrency: int | None = Field(None, gt=0)
    ramp_s: float | None = Field(None, gt=0)
    ramp_start_rate: float | None = Field(None, ge=0)
    cooldown: bool = True

    @field_validator("concurrency", mode="before")
    @classmethod
    def _conc(cls, v: Any) -> Any:
        v = [v] if isinstance(v, int) else v
        for c in v or ():
            if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
                raise ValueError(f"concurrency values must be positive integers (got {c!r})")
        return v

    @field_validator("request_rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (int, float)) else v
        for r in v or ():
            if not isinstance(r, (int, float)) or r <= 0:
                raise ValueError(f"request_rate values must be positive numbers in req/s (got {r!r})")
        return v

    @model_validator(mode="after")
    def _some(self) -> LoadMatrix:
        if not self.concurrency and not self.request_rate:
            raise ValueError("give at least one concurrency or request_rate")
        if self.ramp_start_rate is not None and self.ramp_s is None:
            raise ValueError("ramp_start_rate needs ramp_s")
        return self

    def points(self) -> list[LoadPoint]:
        common = self.model_dump(exclude={"concurrency", "request_rate"})
        closed = {**common, "ramp_start_rate": None}  # a start rate only means something in rate mode
        out = [LoadPoint(concurrency=c, **closed) for c in self.concurrency]
        out += [LoadPoint(request_rate=r, **common) for r in self.request_rate]
        return out


class HardwareRef(StrictModel):
    """Where the sweep runs and what a GPU-hour of it costs (tier from configs/hardware.yaml)."""

    gpu: str = "cpu-2core"
    count: int | None = Field(None, gt=0, description="GPUs per server; default = tensor_parallel_size")
    tier: str = "neocloud"
    usd_per_gpu_hour: float | None = Field(None, gt=0, description="overrides the tier price")


SERVER_AXES = tuple(ServerSpec.model_fields)


class Sweep(StrictModel):
    """A sweep file: server axes x load axes x workloads -> points."""

    name: str
    description: str = ""
    engine: EngineSpec = EngineSpec()
    hardware: HardwareRef = HardwareRef()
    server: dict[str, Any] = Field(..., description="ServerSpec fields; a list value is a sweep axis")
    load: LoadMatrix
    workloads: tuple[WorkloadSpec, ...] = (WorkloadSpec(),)
    slo: Slo = Slo()
    zip: tuple[tuple[str, ...], ...] = Field((), description="server axes that vary together, not crossed")
    include: tuple[dict[str, Any], ...] = Field((), description="extra server combinations to add")
    exclude: tuple[dict[str, Any], ...] = Field((), description="server combinations to drop (subset match)")

    @field_validator("server")
    @classmethod
    def _server_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(SERVER_AXES))
        if unknown:
            raise ValueError(f"unknown server field(s) {unknown}; allowed: {', '.join(SERVER_AXES)}")
        if "model" not in v:
            raise ValueError("server.model is required")
        return v

    @field_validator("workloads", mode="before")
    @classmethod
    def _wl(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _offline_load(self) -> Sweep:
        if self.engine.capabilities.one_batch_per_point and (self.load.request_rate
                                                             or len(self.load.concurrency) != 1):
            raise ValueError(f"engine.kind {self.engine.kind} submits one batch per point: give load.concurrency as "
                             "one value (a label; max_num_seqs caps what runs at once) and no request_rate")
        return self

    def server_specs(self) -> list[ServerSpec]:
        """Expand server axes: cartesian product, except `zip` groups vary together."""
        axes = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in self.server.items()}
        zipped: list[tuple[str, ...]] = [tuple(z) for z in self.zip]
        for group in zipped:
            for k in group:
                if k not in axes:
                    raise ValueError(f"zip names {k!r}, which is not a server field in this sweep")
            lengths = {len(axes[k]) for k in group}
            if len(lengths) != 1:
                raise ValueError(f"zip group {list(group)} needs lists of equal length")
        in_zip = {k for g in zipped for k in g}
        factors: list[list[dict[str, Any]]] = []
        for k in axes:  # keep YAML order: deterministic expansion
            if k not in in_zip:
                factors.append([{k: val} for val in axes[k]])
        for group in zipped:
            n = len(axes[group[0]])
            factors.append([{k: axes[k][i] for k in group} for i in range(n)])
        combos: list[dict[str, Any]] = []
        for prod in itertools.product(*factors):
            d: dict[str, Any] = {}
            for part in prod:
                d.update(part)
            combos.append(d)
        combos = [c for c in combos if not any(_matches(c, ex) for ex in self.exclude)]
        base = {k: axes[k][0] for k in axes}
        for inc in self.include:
            unknown = sorted(set(inc) - set(SERVER_AXES))
            if unknown:
                raise ValueError(f"include has unknown server field(s) {unknown}")
            combos.append({**base, **inc})
        specs: list[ServerSpec] = []
        seen: set[str] = set()
        for c in combos:
            spec = ServerSpec(**c)
            if spec.server_hash not in seen:
                seen.add(spec.server_hash)
                specs.append(spec)
        return specs

    def gpu_count(self, spec: ServerSpec) -> int:
        return self.hardware.count or spec.tensor_parallel_size

    def points(self) -> list[Point]:
        """All points, grouped by server spec (server order, then workload, then load)."""
        out: list[Point] = []
        for spec in self.server_specs():
            for wl in self.workloads:
                for lp in self.load.points():
                    out.append(Point(server=spec, workload=wl, load=lp, gpu_count=self.gpu_count(spec)))
        return out


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(k in combo and combo[k] == v for k, v in pattern.items())


class Point(StrictModel):
    """One measurement: a server config, a workload and a load pattern."""

    server: ServerSpec
    workload: WorkloadSpec
    load: LoadPoint
    gpu_count: int = 1

    @property
    def point_id(self) -> str:
        return stable_hash(self.model_dump())

    @property
    def server_hash(self) -> str:
        return self.server.server_hash


def load_sweep(path: str | Path) -> Sweep:
    """Load and validate a sweep file, checking the model name against the catalog."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a sweep file must be a YAML mapping")
    try:
        sweep = Sweep(**data)
        points = sweep.points()
    except ValidationError as e:
        raise UserInputError(format_validation_error(path, e, Sweep)) from None
    except ValueError as e:
        raise UserInputError(f"{path}: {e}") from None
    from bench.config.catalog import check_model_ref

    for spec in {p.server.model for p in points}:
        check_model_ref(spec, where=f"{path}: server.model")
    if sweep.hardware.usd_per_gpu_hour is None:
        try:
            catalog = load_hardware()
            catalog.check_tier(sweep.hardware.gpu, sweep.hardware.tier)
            tco = catalog.gpu(sweep.hardware.gpu).tco
            if sweep.hardware.tier == TCO_TIER and tco is not None:
                tco.usd_inputs(catalog.exchange_rates.usd_per_cny)  # CNY inputs need a rate
        except UserInputError as e:
            raise UserInputError(f"{path}: hardware.{e}") from None
    return sweep


# --- hardware catalog and price book (configs/hardware.yaml, configs/prices.yaml) -------------
# Why here: cost and margin numbers are only as good as their inputs, so every $/GPU-hour and every
