"""`server:` of a sweep file, resolved to one value per field: everything that needs a server restart.

Why its own module: the engines start a server from exactly this spec, and its hash (`server_hash`)
groups the points that share one engine start. Re-exported by bench.config.sweep, which expands
the sweep file's lists into one `ServerSpec` per combination.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_serializer, model_validator

from bench.config import quant as quant_registry
from bench.config import speculative
from bench.config.base import StrictModel, one_of, one_of_validator, stable_hash
from bench.config.speculative import SpeculativeSpec

DTYPES = ("auto", "bfloat16", "float16", "float32")
# Accepted names come from THE registry (bench.config.quant); None = unquantized.
QUANTIZATIONS: tuple[str | None, ...] = tuple(
    None if q == quant_registry.NONE else q for q in quant_registry.QUANTIZATIONS
)
KV_CACHE_DTYPES = tuple(quant_registry.KV_CACHE_DTYPES)
PREFIX_CACHE_POLICIES = ("reset", "keep")  # server.prefix_cache_between_points

# KV connectors that move a request's KV cache from a prefill server to a decode server, by vLLM 0.32's
# registry names (vllm/distributed/kv_transfer/kv_connector/factory.py); "none" is the aggregated baseline:
# the same servers, each serving whole requests, behind the same proxy. SharedStorageConnector is the
# connector's name before vLLM renamed it ExampleConnector. Local offloading connectors (OffloadingConnector,
# SimpleCPUOffloadConnector) keep KV inside one server, so they cannot serve P/D and are not listed.
DISAGG_CONNECTORS = ("ExampleConnector", "SharedStorageConnector", "NixlConnector", "MooncakeConnector",
                     "MoRIIOConnector", "LMCacheConnectorV1", "none")
# kv_role of (prefill, decode): vLLM's P/D examples use producer/consumer (kv_both is deprecated for NIXL)
DISAGG_KV_ROLES = ("producer_consumer", "both")
KV_BUFFER_DEVICES = ("cpu", "cuda", "xpu")


class DisaggPool(StrictModel):
    """One pool of a disaggregated deployment: `replicas` identical vLLM servers."""

    replicas: int = Field(1, gt=0)
    tensor_parallel_size: int | None = Field(None, gt=0, description="None = server.tensor_parallel_size")


class DisaggSpec(StrictModel):
    """Prefill/decode disaggregation (xPyD) on the real engine: `server.disagg` of a sweep file.

    Why a server field: a P/D deployment is several servers (prefill pool, decode pool) plus a proxy that
    starts and stops together, so it is one server group with its own hash. Rendered into vLLM's
    `--kv-transfer-config` and started by bench.engines.disagg; docs/engines.md has the syntax.
    """

    connector: str = Field(..., description="a vLLM KV connector that moves KV between servers, or none")
    prefill: DisaggPool = DisaggPool()
    decode: DisaggPool = DisaggPool()
    kv_roles: str = Field("producer_consumer", description="producer_consumer: prefill kv_producer, decode "
                          "kv_consumer; both: kv_both on every server")
    kv_buffer_device: str | None = Field(None, description="cpu, cuda or xpu; None = cpu on CPU, cuda on GPU")
    extra_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="kv_connector_extra_config, over the harness's defaults")

    _connector = one_of_validator("connector", DISAGG_CONNECTORS)
    _roles = one_of_validator("kv_roles", DISAGG_KV_ROLES)

    @field_validator("kv_buffer_device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return v if v is None else one_of("kv_buffer_device", v, KV_BUFFER_DEVICES)

    @model_validator(mode="after")
    def _baseline_has_no_kv(self) -> DisaggSpec:
        if self.connector == "none" and self.extra_config:
            raise ValueError("disagg.extra_config: connector none moves no KV; drop extra_config")
        return self

    def pool_tp(self, pool: DisaggPool, server_tp: int) -> int:
        return pool.tensor_parallel_size or server_tp

    def label(self, server_tp: int) -> str:
        """For a row: `1P1D ExampleConnector`, `2P1D TP2/TP4 NixlConnector`; the baseline (connector none) as
        `2 servers aggregated` (`... TP2` when every server has TP 2, else `1xTP2 + 1xTP4 aggregated`)."""
        (p, ptp), (d, dtp) = ((pool.replicas, self.pool_tp(pool, server_tp)) for pool in (self.prefill, self.decode))
        if self.connector == "none":
            if ptp != dtp:
                return f"{p}xTP{ptp} + {d}xTP{dtp} aggregated"
            return f"{p + d} servers aggregated" + (f" TP{ptp}" if ptp != 1 else "")
        return f"{p}P{d}D TP{ptp}/TP{dtp} {self.connector}" if (ptp, dtp) != (1, 1) else f"{p}P{d}D {self.connector}"

    def gpu_count(self, server_tp: int) -> int:
        """GPUs of the whole deployment: prefill replicas x their TP + decode replicas x theirs."""
        return sum(p.replicas * self.pool_tp(p, server_tp) for p in (self.prefill, self.decode))


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
    disagg: DisaggSpec | None = Field(
        None, description="prefill/decode disaggregation (DisaggSpec); absent or null = one aggregated server")
    # reset: empty the server's prefix cache before each point (vLLM: its dev-mode reset route), so no point is
    # served from prompts an earlier point sent; keep: points share what earlier points cached. A workload
    # that shares prefixes on purpose (prefix, mooncake, multiturn, trace prefix_id) still shares them within
    # a point. A server-start setting: vLLM serves the reset only when started in dev mode.
    prefix_cache_between_points: str = "reset"

    _dtype = one_of_validator("dtype", DTYPES)
    _kv = one_of_validator("kv_cache_dtype", KV_CACHE_DTYPES)
    _cache = one_of_validator("prefix_cache_between_points", PREFIX_CACHE_POLICIES)

    @field_validator("quantization")
    @classmethod
    def _quant(cls, v: str | None) -> str | None:
        q = quant_registry.lookup(v)
        if q is None:
            allowed = ", ".join(quant_registry.QUANTIZATIONS)
            raise ValueError(f"quantization must be one of {allowed} (got {v!r})")
        return None if q.name == quant_registry.NONE else q.name

    @field_validator("speculative", mode="before")
    @classmethod
    def _speculative(cls, v: Any) -> Any:
        return speculative.normalize(v)

    @model_serializer(mode="wrap")
    def _drop_no_speculation(self, handler: Any) -> dict[str, Any]:
        """No speculation is left out of the dump, so a spec without it keeps the server_hash (and the
        point_id, the resume key) it had before the field existed."""
        d = handler(self)
        for optional in ("speculative", "disagg"):  # absent = None: the hash of a spec without it is unchanged
            if isinstance(d, dict) and d.get(optional, 0) is None:
                d.pop(optional)
        if isinstance(d, dict) and d.get("prefix_cache_between_points") == "reset":  # the default: hash unchanged
            d.pop("prefix_cache_between_points")
        return d

    @property
    def resets_prefix_cache(self) -> bool:
        """The harness empties the prefix cache before each point (there is one, and the policy says reset)."""
        return self.enable_prefix_caching and self.prefix_cache_between_points == "reset"

    @property
    def server_hash(self) -> str:
        return stable_hash(self.model_dump())
