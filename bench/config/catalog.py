"""Model and GPU catalog, read from configs/models/*.yaml and configs/hardware.yaml.

Parameter counts and KV-cache sizes are *computed* from the published hyperparameters rather
than copied, so a tiny twin, a new model file or a roofline estimate all use one formula, and
the tests can check the formula against the published totals.

Counting conventions (stated once, here):
- total_params includes embeddings and the LM head (untied unless `tie_word_embeddings`) and
  excludes multi-token-prediction (MTP) layers, which serve speculative decoding only;
  `mtp_params` reports them separately.
- active_params is the non-embedding parameter count touched per token (attention, dense FFNs,
  top-k routed plus shared experts, routers): the convention of the published "active" figures.
- kv_bytes_per_token = 2 (K and V) x layers x kv_heads x head_dim x bytes per element.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.config import base
from bench.config.base import CONFIG_DIR, read_yaml
from bench.errors import UserInputError

MODELS_DIR = CONFIG_DIR / "models"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Hyperparameters(BaseModel):
    """The architecture numbers the cost and memory formulas need (HF config.json names)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int | None = None  # dense FFN width
    moe_intermediate_size: int | None = None  # one routed/shared expert's FFN width
    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    n_shared_experts: int = 0
    first_k_dense_replace: int = 0
    max_position_embeddings: int = 4096
    num_nextn_predict_layers: int = 0
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers if not self.is_moe else self.first_k_dense_replace

    @property
    def num_moe_layers(self) -> int:
        return self.num_hidden_layers - self.num_dense_layers

    def attention_params_per_layer(self) -> int:
        h, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        params = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            params += q + 2 * kv
        return params + 2 * h  # two RMSNorms

    def expert_params(self) -> int:
        """One gated-MLP expert: gate, up and down projections."""
        return 3 * self.hidden_size * (self.moe_intermediate_size or 0)

    def dense_ffn_params(self) -> int:
        return 3 * self.hidden_size * (self.intermediate_size or 0)

    def router_params(self) -> int:
        return self.hidden_size * self.n_routed_experts if self.is_moe else 0

    def moe_layer_params(self, active_only: bool) -> int:
        experts = self.num_experts_per_tok if active_only else self.n_routed_experts
        return (experts + self.n_shared_experts) * self.expert_params() + self.router_params()

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def layer_stack_params(self, active_only: bool) -> int:
        attn = self.num_hidden_layers * self.attention_params_per_layer()
        dense = self.num_dense_layers * self.dense_ffn_params()
        moe = self.num_moe_layers * self.moe_layer_params(active_only)
        return attn + dense + moe

    def total_params(self) -> int:
        return self.embedding_params() + self.layer_stack_params(active_only=False)

    def active_params(self) -> int:
        return self.layer_stack_params(active_only=True)

    def mtp_params(self) -> int:
        """MTP layers: one full decoder layer each (MoE when the model is MoE)."""
        per = self.attention_params_per_layer() + (
            self.moe_layer_params(active_only=False) if self.is_moe else self.dense_ffn_params()
        )
        return self.num_nextn_predict_layers * per

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * bytes_per_element


class Published(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    total_params_b: float
    active_params_b: float | None = None
    kv_kib_per_token_bf16: float | None = None
    source: str = ""


class ModelSpec(BaseModel):
    """A catalog entry: a real model, or the tiny twin that shares its architecture class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hf_id: str | None = None
    architecture: str
    model_type: str
    hyperparameters: Hyperparameters
    published: Published | None = None
    twin_of: str | None = None
    deviations: str | None = None

    @property
    def hp(self) -> Hyperparameters:
        return self.hyperparameters

    def summary(self) -> dict[str, Any]:
        hp = self.hp
        return {
            "model": self.name,
            "architecture": self.architecture,
            "twin_of": self.twin_of or "",
            "total_params_b": round(hp.total_params() / 1e9, 4),
            "active_params_b": round(hp.active_params() / 1e9, 4),
            "published_total_b": self.published.total_params_b if self.published else None,
            "kv_kib_per_token_bf16": hp.kv_bytes_per_token(2) / 1024,
            "max_context": hp.max_position_embeddings,
        }


class _ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    hf_id: str | None = None
    architecture: str
    model_type: str
    published: Published | None = None
    hyperparameters: dict[str, Any]
    tiny: dict[str, Any] = Field(default_factory=dict)


@lru_cache(maxsize=8)
def _load_models_cached(models_dirs: tuple[str, ...]) -> dict[str, ModelSpec]:
    """Models of every dir in order; a later dir (the user's) replaces a model of the same name."""
    out: dict[str, ModelSpec] = {}
    for models_dir in models_dirs:
        for path in sorted(Path(models_dir).glob("*.yaml")):
            out.update(_read_model_file(path))
    return out


def _read_model_file(path: Path) -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    data = read_yaml(path)
    try:
        f = _ModelFile(**data)
        out[f.name] = ModelSpec(
            name=f.name, hf_id=f.hf_id, architecture=f.architecture, model_type=f.model_type,
            hyperparameters=Hyperparameters(**f.hyperparameters), published=f.published,
        )
        if f.tiny:
            tname = f.tiny.get("name", f"{f.name}-tiny")
            out[tname] = ModelSpec(
                name=tname, architecture=f.architecture, model_type=f.model_type,
                hyperparameters=Hyperparameters(**f.tiny["hyperparameters"]), twin_of=f.name,
                deviations=f.tiny.get("deviations"),
            )
    except Exception as e:  # pydantic error -> one line naming the file
        raise UserInputError(f"{path}: invalid model file: {str(e).splitlines()[0]}") from None
    return out


def load_models(models_dir: Path | None = None) -> dict[str, ModelSpec]:
    """All catalog models and their tiny twins, by name: the shipped configs/models plus the user's
    <config-dir>/models (same name = the user's wins); or only `models_dir` when given."""
    if models_dir is not None:
        return _load_models_cached((str(models_dir),))
    user = base.user_config_dir()
    dirs = (str(MODELS_DIR),) + ((str(user / "models"),) if user is not None and (user / "models").is_dir() else ())
    return _load_models_cached(dirs)


def get_model(name: str) -> ModelSpec:
    models = load_models()
    if name not in models:
        raise UserInputError(f"unknown model {name!r}; known: {', '.join(models)}")
    return models[name]


def check_model_ref(ref: str, where: str = "model") -> None:
    """A model reference is a catalog name, an existing local directory, or a hub id (org/name)."""
    if ref in load_models() or Path(ref).expanduser().is_dir() or HUB_ID.match(ref):
        return
    raise UserInputError(
        f"{where}: unknown model {ref!r}; use a catalog name ({', '.join(load_models())}), "
        "a local model directory, or a hub id like org/name"
    )
