"""`server:` of a sweep file, resolved to one value per field: everything that needs a server restart.

Why its own module: the engines start a server from exactly this spec, and its hash (`server_hash`)
groups the points that share one engine start. Re-exported by bench.config.sweep, which expands
the sweep file's lists into one `ServerSpec` per combination.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_serializer

from bench.config import quant as quant_registry
from bench.config import speculative
from bench.config.base import StrictModel, one_of_validator, stable_hash
from bench.config.speculative import SpeculativeSpec

DTYPES = ("auto", "bfloat16", "float16", "float32")
# Accepted names come from THE registry (bench.config.quant); None = unquantized.
QUANTIZATIONS: tuple[str | None, ...] = tuple(
    None if q == quant_registry.NONE else q for q in quant_registry.QUANTIZATIONS
)
KV_CACHE_DTYPES = tuple(quant_registry.KV_CACHE_DTYPES)


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

    _dtype = one_of_validator("dtype", DTYPES)
    _kv = one_of_validator("kv_cache_dtype", KV_CACHE_DTYPES)

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
        if isinstance(d, dict) and d.get("speculative", 0) is None:
            d.pop("speculative")
        return d

    @property
    def server_hash(self) -> str:
        return stable_hash(self.model_dump())
