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

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATIONS = (
    None, "fp8", "int8-w8a8", "int8-w8a8-dense", "awq", "gptq", "awq_marlin", "gptq_marlin", "compressed-tensors",
)
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
ENDPOINTS = ("completions", "chat")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on dict order or Python version."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class EngineSpec(StrictModel):
    """Which engine serves the points: a vLLM server we start, or an endpoint that already runs."""

    kind: Literal["vllm", "openai", "vllm-offline"] = Field(
        "vllm", description="vllm: start a server; openai: an endpoint at base_url; vllm-offline: LLM.generate batch"
    )
    startup_timeout_s: float = Field(600.0, gt=0)
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE, applied only on CPU")
    cpu_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="applied only on CPU")
    # kind == "openai": an already-running server or a provider API.
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
        return self.ignore_eos if self.ignore_eos is not None else self.kind == "vllm"

    @model_validator(mode="after")
    def _check_openai(self) -> EngineSpec:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("engine.base_url is required when engine.kind is 'openai'")
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
        if v in ("none", "bf16", ""):
            return None
        if v not in QUANTIZATIONS:
            allowed = ", ".join(str(q) for q in QUANTIZATIONS)
            raise ValueError(f"quantization must be one of {allowed} (got {v!r})")
        return v

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


class Slo(StrictModel):
    """Per-request latency thresholds for goodput. None = not constrained."""

    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2el_ms: float | None = Field(None, gt=0)


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
        if self.engine.kind == "vllm-offline" and (self.load.request_rate or len(self.load.concurrency) != 1):
            raise ValueError("engine.kind vllm-offline submits one batch per point: give load.concurrency as one "
                             "value (a label; max_num_seqs caps what runs at once) and no request_rate")
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


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent = first["loc"][:-1]
        msg = f"unknown field; allowed: {', '.join(_allowed_fields(parent))}"
    elif first["type"] == "literal_error":
        msg = first["msg"]
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Sweep
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    return list(getattr(model, "model_fields", {}))


def read_yaml(path: Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a one-line UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserInputError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None


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
        raise UserInputError(_format_validation_error(path, e)) from None
    except ValueError as e:
        raise UserInputError(f"{path}: {e}") from None
    from bench.catalog import check_model_ref

    for spec in {p.server.model for p in points}:
        check_model_ref(spec, where=f"{path}: server.model")
    if sweep.hardware.usd_per_gpu_hour is None:
        try:
            resolve_usd_per_gpu_hour(sweep.hardware.gpu, sweep.hardware.tier)
        except UserInputError as e:
            raise UserInputError(f"{path}: hardware.{e}") from None
    return sweep


# --- hardware catalog and price book (configs/hardware.yaml, configs/prices.yaml) -------------
# Why here: cost and margin numbers are only as good as their inputs, so every $/GPU-hour and every
# token price carries a source and a date, money is tagged with its currency, and CNY becomes USD
# only through the exchange rate written in configs/hardware.yaml (never a live lookup).

CURRENCIES = ("USD", "CNY")
RENTAL_TIERS = ("hyperscaler", "neocloud", "reserved", "on-demand")  # the usual names; others allowed
TCO_TIER = "tco"  # the pseudo-tier meaning "owned hardware, priced by the TCO model"
DATE_PATTERN = r"^\d{4}(-\d{2}(-\d{2})?)?$"  # YYYY-MM-DD, or coarser when the source is


class ExchangeRates(StrictModel):
    """The one CNY->USD rate used everywhere; None means converting CNY is an error."""

    usd_per_cny: float | None = Field(None, gt=0)
    as_of: str | None = Field(None, pattern=DATE_PATTERN)
    source: str = ""


def convert_to_usd(amount: float, currency: str, usd_per_cny: float | None, what: str = "amount") -> float:
    """Convert `amount` in `currency` to USD; CNY without an explicit rate is a UserInputError."""
    if currency == "USD":
        return float(amount)
    if currency == "CNY":
        if usd_per_cny is None:
            raise UserInputError(
                f"{what} is in CNY but no exchange rate is set; set exchange_rates.usd_per_cny in "
                "configs/hardware.yaml (or pass --usd-per-cny); mixing USD and CNY needs an explicit rate"
            )
        if usd_per_cny <= 0:
            raise UserInputError(f"usd_per_cny must be > 0 (got {usd_per_cny})")
        return float(amount) * usd_per_cny
    raise UserInputError(f"currency must be one of {', '.join(CURRENCIES)} (got {currency!r})")


class RentalTier(StrictModel):
    """A rented GPU-hour at a named tier, with where the number came from."""

    usd_per_gpu_hour: float = Field(..., gt=0)
    source: str
    as_of: str = Field(..., pattern=DATE_PATTERN)
    note: str = ""


class TcoSpec(StrictModel):
    """Owned hardware: capex amortized over years (less residual), energy and hosting, per GPU-hour.

    Each money field names its currency (`capex_usd` or `capex_cny`, ...), give one of each pair.
    `kw_all_in` is the power drawn per GPU including its share of host and network; `pue` is applied
    on top (set 1.0 when `kw_all_in` is already a facility-level figure).
    """

    capex_usd: float | None = Field(None, gt=0)
    capex_cny: float | None = Field(None, gt=0)
    amortization_years: float = Field(..., gt=0)
    residual_fraction: float = Field(0.0, ge=0, lt=1)
    cost_of_capital_rate: float = Field(0.0, ge=0, lt=1, description="annual; 0 = straight-line")
    kw_all_in: float = Field(..., gt=0)
    pue: float = Field(1.0, ge=1)
    usd_per_kwh: float | None = Field(None, ge=0)
    cny_per_kwh: float | None = Field(None, ge=0)
    hosting_usd_per_gpu_hour: float | None = Field(None, ge=0)
    hosting_cny_per_gpu_hour: float | None = Field(None, ge=0)
    source: str = ""
    as_of: str | None = Field(None, pattern=DATE_PATTERN)

    @model_validator(mode="after")
    def _one_of_each(self) -> TcoSpec:
        for usd, cny in (("capex_usd", "capex_cny"), ("usd_per_kwh", "cny_per_kwh"),
                         ("hosting_usd_per_gpu_hour", "hosting_cny_per_gpu_hour")):
            if (getattr(self, usd) is None) == (getattr(self, cny) is None):
                raise ValueError(f"give exactly one of {usd} or {cny}")
        return self

    def _usd(self, field_usd: str, field_cny: str, usd_per_cny: float | None) -> float:
        v = getattr(self, field_usd)
        if v is not None:
            return float(v)
        return convert_to_usd(getattr(self, field_cny), "CNY", usd_per_cny, what=f"tco.{field_cny}")

    def breakdown(self, usd_per_cny: float | None = None) -> dict[str, float]:
        """$/GPU-hour split into capital, energy and hosting (see bench.cost.tco_usd_per_gpu_hour)."""
        from bench.cost import tco_usd_per_gpu_hour

        return tco_usd_per_gpu_hour(
            capex_usd=self._usd("capex_usd", "capex_cny", usd_per_cny),
            amortization_years=self.amortization_years,
            residual_fraction=self.residual_fraction,
            kw_all_in=self.kw_all_in,
            pue=self.pue,
            usd_per_kwh=self._usd("usd_per_kwh", "cny_per_kwh", usd_per_cny),
            hosting_usd_per_gpu_hour=self._usd(
                "hosting_usd_per_gpu_hour", "hosting_cny_per_gpu_hour", usd_per_cny
            ),
            cost_of_capital_rate=self.cost_of_capital_rate,
        ).to_dict()

    def usd_per_gpu_hour(self, usd_per_cny: float | None = None) -> float:
        return self.breakdown(usd_per_cny)["usd_per_gpu_hour"]


class GpuSpec(StrictModel):
    """One accelerator: peak specs (vendor datasheets) and what an hour of it costs."""

    name: str
    memory_gb: float = Field(..., gt=0)
    hbm_gb_s: float = Field(..., gt=0, description="memory bandwidth, GB/s (DDR for the CPU stand-in)")
    tflops_bf16: float | None = Field(None, gt=0)
    tflops_fp8: float | None = Field(None, gt=0)
    tflops_int8: float | None = Field(None, gt=0)
    tflops_fp4: float | None = Field(None, gt=0)
    tdp_w: float | None = Field(None, gt=0)
    interconnect_gb_s: float | None = Field(None, gt=0, description="per GPU, one direction")
    interconnect_source: str = ""
    is_cpu_standin: bool = False
    notes: str = ""
    tiers: dict[str, RentalTier] = Field(default_factory=dict)
    tco: TcoSpec | None = None

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v: dict[str, RentalTier]) -> dict[str, RentalTier]:
        if TCO_TIER in v:
            raise ValueError(f"'{TCO_TIER}' is reserved for owned hardware; put it under `tco:`")
        return v

    def cost_tiers(self) -> list[str]:
        """Every tier this GPU can be priced at: its rental tiers, then 'tco' when it has a TCO model."""
        return list(self.tiers) + ([TCO_TIER] if self.tco is not None else [])


class HardwareCatalog(StrictModel):
    """configs/hardware.yaml: the exchange rate and the GPU catalog."""

    exchange_rates: ExchangeRates = ExchangeRates()
    gpus: dict[str, GpuSpec]

    def gpu(self, gpu_id: str) -> GpuSpec:
        if gpu_id not in self.gpus:
            raise UserInputError(f"gpu: unknown GPU {gpu_id!r}; allowed: {', '.join(self.gpus)}")
        return self.gpus[gpu_id]

    def usd_per_gpu_hour(self, gpu_id: str, tier: str, usd_per_cny: float | None = None) -> float:
        """$/GPU-hour at a rental tier, or from the TCO model when tier == 'tco'."""
        spec = self.gpu(gpu_id)
        rate = usd_per_cny if usd_per_cny is not None else self.exchange_rates.usd_per_cny
        if tier == TCO_TIER and spec.tco is not None:
            return spec.tco.usd_per_gpu_hour(rate)
        if tier in spec.tiers:
            return spec.tiers[tier].usd_per_gpu_hour
        allowed = spec.cost_tiers()
        hint = ", ".join(allowed) if allowed else "none known; give --usd-per-gpu-hour"
        raise UserInputError(f"tier: unknown tier {tier!r} for gpu {gpu_id!r}; allowed: {hint}")


class TokenPrices(StrictModel):
    """Per-million-token prices (in the entry's currency) for requests up to `max_input_tokens`."""

    max_input_tokens: int | None = Field(None, gt=0, description="None = no upper bound")
    input_per_m: float = Field(..., ge=0)
    output_per_m: float = Field(..., ge=0)
    cached_input_per_m: float | None = Field(None, ge=0, description="None = cache hits billed as input")
    cache_write_per_m: float | None = Field(None, ge=0)


class PriceEntry(StrictModel):
    """One model at one provider: flat prices, or `tiers` by request input length (not both).

    Tiered billing (e.g. Aliyun <=32K / 32-96K input) prices the whole request at the tier its
    input length falls in. A request longer than the last bounded tier is an error, not a guess.
    """

    currency: Literal["USD", "CNY"]
    as_of: str = Field(..., pattern=DATE_PATTERN)
    source: str
    note: str = ""
    input_per_m: float | None = Field(None, ge=0)
    output_per_m: float | None = Field(None, ge=0)
    cached_input_per_m: float | None = Field(None, ge=0)
    cache_write_per_m: float | None = Field(None, ge=0)
    tiers: tuple[TokenPrices, ...] = ()

    @model_validator(mode="after")
    def _flat_or_tiers(self) -> PriceEntry:
        flat = self.input_per_m is not None or self.output_per_m is not None
        if self.tiers and flat:
            raise ValueError("give either flat prices (input_per_m, output_per_m, ...) or tiers, not both")
        if not self.tiers and (self.input_per_m is None or self.output_per_m is None):
            raise ValueError("input_per_m and output_per_m are required (or give tiers)")
        bounds = [t.max_input_tokens for t in self.tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may have max_input_tokens: null")
        finite = [b for b in bounds if b is not None]
        if finite != sorted(set(finite)):
            raise ValueError("tiers must be in increasing order of max_input_tokens")
        return self

    def all_tiers(self) -> tuple[TokenPrices, ...]:
        if self.tiers:
            return self.tiers
        return (TokenPrices(
            input_per_m=self.input_per_m, output_per_m=self.output_per_m,  # type: ignore[arg-type]
            cached_input_per_m=self.cached_input_per_m, cache_write_per_m=self.cache_write_per_m,
        ),)

    def prices_for(self, input_tokens: float) -> TokenPrices:
        """The price tier that applies to a request with `input_tokens` prompt tokens."""
        for t in self.all_tiers():
            if t.max_input_tokens is None or input_tokens <= t.max_input_tokens:
                return t
        top = self.all_tiers()[-1].max_input_tokens
        raise UserInputError(
            f"input_tokens: {input_tokens:g} is above the longest priced tier (max_input_tokens {top}) "
            "of this price entry; allowed: input_tokens <= " + str(top)
        )


PRICE_KEY_PATTERN = r"^[a-z0-9][a-z0-9.\-]*@[a-z0-9][a-z0-9.\-]*$"


class PriceBook(StrictModel):
    """configs/prices.yaml: `<model>@<provider>` -> PriceEntry."""

    prices: dict[str, PriceEntry]

    @field_validator("prices")
    @classmethod
    def _keys(cls, v: dict[str, PriceEntry]) -> dict[str, PriceEntry]:
        import re

        bad = [k for k in v if not re.match(PRICE_KEY_PATTERN, k)]
        if bad:
            raise ValueError(f"price keys must look like <model>@<provider> in lower case (got {bad})")
        return v

    def models(self) -> list[str]:
        return sorted({k.split("@")[0] for k in self.prices})

    def providers(self, model: str) -> list[str]:
        return sorted(k.split("@")[1] for k in self.prices if k.split("@")[0] == model)

    def get(self, key: str) -> PriceEntry:
        """Look up `<model>@<provider>`; an unknown model or provider names the allowed ones."""
        if key in self.prices:
            return self.prices[key]
        if "@" not in key:
            raise UserInputError(
                f"price: {key!r} must be <model>@<provider>; allowed: {', '.join(self.prices)}"
            )
        model, provider = key.split("@", 1)
        if model not in self.models():
            raise UserInputError(f"price: unknown model {model!r}; allowed: {', '.join(self.models())}")
        raise UserInputError(
            f"price: unknown provider {provider!r} for {model}; allowed: {', '.join(self.providers(model))}"
        )


def _econ_validation_error(path: Path, err: ValidationError, root: type[BaseModel]) -> str:
    """One line: file, dotted field path, reason; for unknown fields, the allowed field names."""
    import typing

    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        model: Any = root
        for part in first["loc"][:-1]:
            if isinstance(part, int) or not hasattr(model, "model_fields"):
                continue
            field = model.model_fields.get(part)
            if field is None:
                continue  # a dict key (GPU id, tier name, price key): stay on the value type
            ann = field.annotation
            candidates = [ann, *typing.get_args(ann)]
            for c in list(candidates):
                candidates += list(typing.get_args(c))
            model = next((c for c in candidates if hasattr(c, "model_fields")), ann)
        allowed = list(getattr(model, "model_fields", {}))
        msg = f"unknown field; allowed: {', '.join(allowed)}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def load_hardware(path: str | Path | None = None) -> HardwareCatalog:
    """Load configs/hardware.yaml (or `path`); problems become a one-line UserInputError."""
    path = Path(path) if path is not None else CONFIG_DIR / "hardware.yaml"
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a hardware file must be a YAML mapping with keys exchange_rates, gpus")
    try:
        return HardwareCatalog(**data)
    except ValidationError as e:
        raise UserInputError(_econ_validation_error(path, e, HardwareCatalog)) from None


def load_price_book(path: str | Path | None = None) -> PriceBook:
    """Load configs/prices.yaml (or `path`); problems become a one-line UserInputError."""
    path = Path(path) if path is not None else CONFIG_DIR / "prices.yaml"
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a price book must be a YAML mapping with the key prices")
    try:
        return PriceBook(**data)
    except ValidationError as e:
        raise UserInputError(_econ_validation_error(path, e, PriceBook)) from None


def resolve_usd_per_gpu_hour(gpu: str, tier: str, catalog: HardwareCatalog | None = None) -> float:
    """$/GPU-hour for `gpu` at a named rental tier, or 'tco' for owned hardware (TCO model)."""
    catalog = catalog if catalog is not None else load_hardware()
    return catalog.usd_per_gpu_hour(gpu, tier)
