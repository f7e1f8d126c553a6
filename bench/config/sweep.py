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
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from bench.config import quant as quant_registry
from bench.config import speculative
from bench.config.base import StrictModel, format_validation_error, one_of, read_yaml, stable_hash
from bench.config.hardware import TCO_TIER, load_hardware
from bench.config.slo import Slo
from bench.config.speculative import SpeculativeSpec
from bench.errors import UserInputError

DTYPES = ("auto", "bfloat16", "float16", "float32")
# Accepted names come from THE registry (bench.config.quant); None = unquantized.
QUANTIZATIONS: tuple[str | None, ...] = tuple(
    None if q == quant_registry.NONE else q for q in quant_registry.QUANTIZATIONS
)
KV_CACHE_DTYPES = tuple(quant_registry.KV_CACHE_DTYPES)
ENDPOINTS = ("completions", "chat")
# A run name becomes a directory under --out: no path separators, no leading dot or dash.
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RUN_NAME_RULE = "1-100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"



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
        if self.base_url is not None:
            check_base_url(self.base_url)
        return self


def check_base_url(url: str) -> None:
    """A base_url must be http(s)://host[:port][/path]: checked when the sweep is read, not when the
    first request fails after a run dir exists (`localhost:8000` parses as scheme "localhost")."""
    try:
        u = urlsplit(url.strip())
        u.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"engine.base_url must be http(s)://host[:port][/path] (got {url!r})")


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
    speculative: SpeculativeSpec | None = Field(
        None, description="speculative decoding (bench.config.speculative); absent, null or K = 0 = none")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        return one_of("dtype", v, DTYPES)

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
        return one_of("kv_cache_dtype", v, KV_CACHE_DTYPES)

    @field_validator("speculative", mode="before")
    @classmethod
    def _speculative(cls, v: Any) -> Any:
        return speculative.normalize(v)

    @model_serializer(mode="wrap")
    def _drop_no_speculation(self, handler: Any) -> dict[str, Any]:
        """No speculation is left out of the dump, so a spec without it keeps the server_hash (and the
        point_id, the resume key) it had before the field existed."""
        d = handler(self)
        if isinstance(d, dict) and d.get("speculative", 0) is None:
            d.pop("speculative")
        return d

    @property
    def server_hash(self) -> str:
        return stable_hash(self.model_dump())


# Named workloads that match the field (`workloads: [{preset: agentic}]`; fields given beside `preset`
# override the preset's). 8k1k: InferenceX's fixed 8192-in / 1024-out scenario, which replaced its 1k/1k
# (SemiAnalysis InferenceX, inferencemax.ai, seen 2026-11). agentic: multi-turn coding-agent sessions;
# its sizes are maas-bench's modelling choice (a long shared system prompt, tool output appended every
# turn), not a published trace: replay a real one with kind mooncake / trace for published numbers.
WORKLOAD_PRESETS: dict[str, dict[str, Any]] = {
    "8k1k": {"name": "8k1k", "kind": "fixed", "input_len": 8192, "output_len": 1024},
    "agentic": {"name": "agentic", "kind": "multiturn", "system_prompt_len": 2048, "turns": 8,
                "turns_range_ratio": 0.5, "input_len": 512, "output_len": 256, "range_ratio": 0.5,
                "think_time_s": 2.0, "think_time_dist": "exponential"},
}


class WorkloadSpec(StrictModel):
    """How prompts and output lengths are generated (see bench/measure/workloads.py for semantics)."""

    name: str = "fixed"
    preset: Literal["8k1k", "agentic"] | None = Field(
        None, description="start from a named workload (WORKLOAD_PRESETS); fields given beside it override it")
    kind: Literal["fixed", "ranged", "chat", "prefix", "trace", "mooncake", "multiturn"] = "fixed"
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
    # trace replay (kind trace: maas-bench JSONL; kind mooncake: Mooncake JSONL with hash_ids)
    trace_path: str | None = None
    block_tokens: int = Field(512, gt=0, description="mooncake: tokens per hash_id block (512 in Mooncake's traces)")
    # multi-turn sessions (kind multiturn): input_len = new user tokens per turn, output_len = output
    # tokens per turn (both ranged by range_ratio); the conversation so far is resent every turn
    turns: int = Field(4, gt=0, description="multiturn: turns per session (centre of the range)")
    turns_range_ratio: float = Field(0.0, ge=0, lt=1, description="multiturn: turns uniform in [T(1-r), T(1+r)]")
    think_time_s: float = Field(0.0, ge=0, description="multiturn: mean pause between a reply and the next turn")
    think_time_dist: Literal["fixed", "exponential"] = "fixed"
    system_prompt_len: int = Field(0, ge=0, description="multiturn: tokens of a system prompt shared by every session")
    seed: int = 0
    endpoint: Literal["completions", "chat"] = "completions"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """`preset: agentic` fills the preset's fields; fields given beside it win."""
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = WORKLOAD_PRESETS.get(data["preset"])
            if preset is None:
                raise ValueError(f"preset must be one of {', '.join(WORKLOAD_PRESETS)} (got {data['preset']!r})")
            return {**preset, **data}
        return data


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
        v = [v] if isinstance(v, (int, str)) else v
        for c in v or ():
            if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
                raise ValueError(f"concurrency values must be positive integers (got {c!r})")
        return v

    @field_validator("request_rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (int, float)) else v
        for r in v or ():
            if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) or r <= 0:
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
    tier: str = "on-demand"  # a sweep without `tier` prices its hours at on-demand rental
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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RUN_NAME_PATTERN.match(v):
            raise ValueError(f"name must be {RUN_NAME_RULE} (it names the run directory; got {v!r})")
        return v

    @field_validator("workloads", mode="before")
    @classmethod
    def _wl(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _unique(self) -> Sweep:
        """Identical points would overwrite each other's rows (a row is keyed by the point's hash)."""
        names = [w.name for w in self.workloads]
        dup = _first_duplicate(names)
        if dup is not None:
            raise ValueError(f"workloads: the name {dup!r} is used twice; workload names must be unique")
        for axis in ("concurrency", "request_rate"):
            dup = _first_duplicate(getattr(self.load, axis))
            if dup is not None:
                raise ValueError(f"load.{axis}: the value {dup!r} is listed twice (it would measure the same point)")
        zipped = {k for group in self.zip for k in group}
        for group in self.zip:  # a zip group's values repeat per axis; its tuples must not
            cols = [self.server.get(k) for k in group]
            if all(isinstance(c, (list, tuple)) for c in cols):
                dup = _first_duplicate(list(zip(*cols, strict=False)))
                if dup is not None:
                    raise ValueError(f"zip {list(group)}: the combination {list(dup)} is listed twice")
        for k, v in self.server.items():
            if isinstance(v, (list, tuple)):
                if not v:
                    raise ValueError(f"server.{k}: an empty list; give at least one value")
                dup = _first_duplicate(v) if k not in zipped else None
                if dup is not None:
                    raise ValueError(f"server.{k}: the value {dup!r} is listed twice (it would measure the same "
                                     "point)")
        return self

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
        if "speculative" in axes:  # lists inside one spec expand too (bench.config.speculative.expand)
            axes["speculative"] = speculative.expand(self.server["speculative"])
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
            spec = _server_spec(c)
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


def _server_spec(combo: dict[str, Any]) -> ServerSpec:
    """A ServerSpec from one combination; errors name the field as the sweep file does (`server.x`)."""
    try:
        return ServerSpec(**combo)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ValueError(f"server.{loc}: {first['msg'].removeprefix('Value error, ')}{more}") from None


def _first_duplicate(values: Any) -> Any:
    """The first value that appears twice (by equality, so 1 and 1.0 count as one), else None."""
    seen: list[Any] = []
    for v in values:
        if any(v == s and type(v) is not bool and type(s) is not bool for s in seen):
            return v
        seen.append(v)
    return None


def max_request_tokens(w: WorkloadSpec) -> int | None:
    """The longest prompt + output a workload asks for by its config (None: decided by a trace file).

    chat draws lognormal lengths with a long tail; its median request is checked (the tail is
    clipped at 8x and a few over-long requests fail with the server's reason, which is reported).
    """
    if w.kind in ("trace", "mooncake"):
        return None
    if w.kind == "multiturn":  # the last turn of the longest session resends the whole conversation
        turns = math.ceil(w.turns * (1 + w.turns_range_ratio))
        per_turn = math.ceil(w.input_len * (1 + w.range_ratio)) + math.ceil(w.output_len * (1 + w.range_ratio))
        return w.system_prompt_len + turns * per_turn
    if w.kind == "ranged":
        return math.ceil(w.input_len * (1 + w.range_ratio)) + math.ceil(w.output_len * (1 + w.range_ratio))
    if w.kind == "prefix":
        return w.prefix_len + w.input_len + w.output_len
    return w.input_len + w.output_len


def check_lengths(sweep: Sweep, points: list[Point], where: str) -> None:
    """Every request of a point must fit the server's max_model_len, or vLLM answers each with HTTP 400.

    Only for engines we start: an external endpoint's limit is not in the sweep file.
    """
    if sweep.engine.capabilities.needs_base_url:
        return
    for p in points:
        need = max_request_tokens(p.workload)
        if need is not None and need > p.server.max_model_len:
            raise UserInputError(
                f"{where}: workload {p.workload.name!r} needs {need} tokens per request (input + output) but "
                f"server.max_model_len is {p.server.max_model_len}; raise max_model_len or shorten the workload")


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
    check_lengths(sweep, points, str(path))
    eng = sweep.engine
    if eng.api_key_env and not os.environ.get(eng.api_key_env):
        raise UserInputError(f"{path}: engine.api_key_env: environment variable {eng.api_key_env} is not set "
                             "(export it before the run; the key itself is never written to a file)")
    from bench.config.catalog import check_model_ref

    for spec in {p.server.model for p in points}:
        check_model_ref(spec, where=f"{path}: server.model")
    from bench.config.catalog import load_models

    for model, spec in {(p.server.model, p.server.speculative) for p in points if p.server.speculative}:
        if sweep.engine.capabilities.needs_base_url:
            raise UserInputError(f"{path}: server.speculative: engine.kind {sweep.engine.kind} measures an endpoint "
                                 "that already runs; its speculative decoding is set where it is served")
        speculative.check_draft_model(spec, where=f"{path}: server.speculative.draft_model")
        speculative.check_model_support(spec, load_models().get(model), where=f"{path}: server.speculative.method")
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
