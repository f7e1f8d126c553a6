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
- kv_bytes_per_token and the attention read/FLOP formulas depend on the model's `attention:` type
  (gqa, mla, mla+dsa, msa); each is written once, in `Hyperparameters`, with its formula in the
  docstring. A model file without `attention:` is gqa (grouped-query full attention).
- Some vendors' published "active" figure includes the embeddings (MiniMax-M3's 26B); the model
  file says so with `published.active_counts_embeddings: true` and the comparison adds them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.config import base
from bench.config.base import CONFIG_DIR, read_yaml
from bench.errors import UserInputError
from bench.units import bytes_to_kib, in_billions

MODELS_DIR = CONFIG_DIR / "models"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
AttentionType = Literal["gqa", "mla", "mla+dsa", "msa"]
# Fields each attention type needs in `hyperparameters:` (HF config.json names where HF has one).
REQUIRED_ATTENTION_FIELDS: dict[str, tuple[str, ...]] = {
    "gqa": (),
    "mla": ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
    "mla+dsa": ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                "index_n_heads", "index_head_dim", "index_topk"),
    "msa": ("index_n_heads", "index_head_dim", "index_topk_blocks", "index_block_size", "num_sparse_layers"),
}
# DSA index keys: vLLM stores them FP8 with one FP32 scale per 128 elements ("fp8 naive cache",
# vllm 0.32 model_executor/models/deepseek_v2.py Indexer: head_dim + head_dim // 128 * 4 bytes), whatever
# the KV-cache dtype of the latent.
DSA_INDEX_SCALE_BLOCK = 128
# Model-file keys that are catalog bookkeeping, not HF config.json keys (never written to config.json).
CATALOG_ONLY_KEYS = frozenset({"attention", "num_indexer_layers", "num_sparse_layers", "index_topk_blocks",
                               "index_block_size"})


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
    # attention type (the model file's top-level `attention:`); the fields below are per type
    attention: AttentionType = "gqa"
    # MLA (DeepSeek-V2 style low-rank q/kv; GLM-5.x): q_lora_rank None = full-rank q projection
    q_lora_rank: int | None = Field(None, gt=0)
    kv_lora_rank: int | None = Field(None, gt=0)
    qk_nope_head_dim: int | None = Field(None, gt=0)
    qk_rope_head_dim: int | None = Field(None, gt=0)
    v_head_dim: int | None = Field(None, gt=0)
    # sparse-attention indexers: DSA (mla+dsa) and MiniMax-M3 MSA (msa)
    index_n_heads: int | None = Field(None, gt=0)
    index_head_dim: int | None = Field(None, gt=0)
    index_topk: int | None = Field(None, gt=0)  # DSA: tokens each query attends to
    num_indexer_layers: int | None = Field(None, ge=0)  # DSA: layers with their own indexer; None = all
    index_topk_blocks: int | None = Field(None, gt=0)  # MSA: blocks each query attends to
    index_block_size: int | None = Field(None, gt=0)  # MSA: tokens per block
    num_sparse_layers: int | None = Field(None, ge=0)  # MSA: block-sparse layers (the rest are full GQA)

    @model_validator(mode="after")
    def _attention_fields(self) -> Hyperparameters:
        for f in REQUIRED_ATTENTION_FIELDS[self.attention]:
            if getattr(self, f) is None:
                raise ValueError(f"{f} is required for attention {self.attention}")
        for f in ("num_indexer_layers", "num_sparse_layers"):
            if (getattr(self, f) or 0) > self.num_hidden_layers:
                raise ValueError(f"{f} must be <= num_hidden_layers ({self.num_hidden_layers})")
        return self

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
        """Attention projections of one layer, plus its two RMSNorms (2h); indexers are apart.

        gqa / msa: q, k, v, o = h*H*d + 2*h*Hkv*d + H*d*h (+ q/k/v biases when attention_bias).
        mla / mla+dsa (q_lora r_q, kv_lora r_kv, nope n, rope r, v dim v):
            h*r_q + r_q*H*(n+r)            q down + up (h*H*(n+r) without q_lora)
          + h*(r_kv + r) + r_kv*H*(n+v)    kv down (latent + shared rope key) + kv up
          + H*v*h                           output
          + r_q + r_kv                      the q/kv latent RMSNorms.
        """
        h, H = self.hidden_size, self.num_attention_heads
        if self.attention in ("mla", "mla+dsa"):
            r_kv, n, r, v = self.kv_lora_rank or 0, self.qk_nope_head_dim or 0, self.qk_rope_head_dim or 0, \
                self.v_head_dim or 0
            r_q = self.q_lora_rank
            q = h * r_q + r_q * H * (n + r) + r_q if r_q else h * H * (n + r)
            params = q + h * (r_kv + r) + r_kv * H * (n + v) + r_kv + H * v * h
            return params + 2 * h
        q, kv = H * self.head_dim, self.num_key_value_heads * self.head_dim
        params = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            params += q + 2 * kv
        return params + 2 * h  # two RMSNorms

    @property
    def num_index_layers(self) -> int:
        """Layers that own an indexer: DSA `num_indexer_layers` (GLM-5.2: 21 "full" of 78, the others
        reuse the previous full layer's top-k), every layer by default; MSA: the sparse layers."""
        if self.attention == "mla+dsa":
            return self.num_hidden_layers if self.num_indexer_layers is None else self.num_indexer_layers
        if self.attention == "msa":
            return self.num_sparse_layers or 0
        return 0

    def indexer_params_per_layer(self) -> int:
        """One sparse-attention indexer (0 for gqa / mla).

        DSA (DeepSeek-V3.2 / GLM-5.x, index heads I, index dim D, q_lora r_q):
            r_q*I*D (wq_b, from the q latent) + h*D (wk, one shared key) + h*I (weights_proj)
            + 2*D (k_norm LayerNorm with bias).
        MSA (MiniMax-M3): h*I*D (index_q_proj) + h*D (index_k_proj, one shared key head)
            + 2*D (index q/k RMSNorms); the index value branch is disabled in its sparse layers.
        """
        h, i_h, d = self.hidden_size, self.index_n_heads or 0, self.index_head_dim or 0
        if self.attention == "mla+dsa":
            q_in = self.q_lora_rank or h
            return q_in * i_h * d + h * d + h * i_h + 2 * d
        if self.attention == "msa":
            return h * i_h * d + h * d + 2 * d
        return 0

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
        attn = self.num_hidden_layers * self.attention_params_per_layer() \
            + self.num_index_layers * self.indexer_params_per_layer()
        dense = self.num_dense_layers * self.dense_ffn_params()
        moe = self.num_moe_layers * self.moe_layer_params(active_only)
        return attn + dense + moe

    def total_params(self) -> int:
        return self.embedding_params() + self.layer_stack_params(active_only=False)

    def active_params(self) -> int:
        return self.layer_stack_params(active_only=True)

    def mtp_params(self) -> int:
        """MTP layers, counted apart from the served stack: each is one full decoder layer (MoE when the
        model is MoE; with its indexer under DSA) + eh_proj (2h x h) + enorm/hnorm/final norm (3h).
        GLM-5.1: 743.91B stack + 9.95B MTP = 753.86B, its BF16 safetensors total."""
        h = self.hidden_size
        per = self.attention_params_per_layer() + (
            self.moe_layer_params(active_only=False) if self.is_moe else self.dense_ffn_params()
        ) + 2 * h * h + 3 * h + (self.indexer_params_per_layer() if self.attention == "mla+dsa" else 0)
        return self.num_nextn_predict_layers * per

    # --- KV cache and attention reads, per attention type ------------------------------------------

    def _kv_parts_per_token(self, bytes_per_element: float) -> tuple[float, float, float]:
        """Per-token cache bytes of ONE layer: (split by TP over KV heads, replicated latent, index keys).

        gqa / msa attention: 2 (K, V) x kv_heads x head_dim x bytes   -> split over TP ranks
        mla / mla+dsa:       (kv_lora_rank + qk_rope_head_dim) x bytes -> one latent, on every rank
        index keys (per indexer layer only): DSA index_head_dim + index_head_dim/128 x 4 bytes (FP8 + one
        FP32 scale per 128, vLLM's indexer cache, whatever the KV dtype); MSA index_head_dim x bytes
        (one shared key head at the KV-cache dtype: an assumption, no vLLM CPU build to read it from).
        """
        if self.attention in ("mla", "mla+dsa"):
            split, latent = 0.0, ((self.kv_lora_rank or 0) + (self.qk_rope_head_dim or 0)) * bytes_per_element
        else:
            split, latent = 2.0 * self.num_key_value_heads * self.head_dim * bytes_per_element, 0.0
        d = self.index_head_dim or 0
        if self.attention == "mla+dsa":
            index = d + d // DSA_INDEX_SCALE_BLOCK * 4.0
        elif self.attention == "msa":
            index = d * bytes_per_element
        else:
            index = 0.0
        return split, latent, index

    def kv_share_per_rank(self, tp: int) -> float:
        """Fraction of the head-split KV one of `tp` ranks holds: max(kv_heads/tp, 1)/kv_heads (KV heads
        replicate when tp > kv_heads). Latents and index keys are not split: every rank holds them all."""
        kv_heads = max(self.num_key_value_heads, 1)
        return max(kv_heads / max(tp, 1), 1.0) / kv_heads

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0, tp: int = 1) -> float:
        """KV-cache bytes one token occupies on one of `tp` ranks (tp=1: the whole replica's cache).

        gqa:     2 x layers x kv_heads x head_dim x bytes (GLM-4.5 BF16: 2x92x8x128x2 = 376,832)
        mla:     layers x (kv_lora_rank + qk_rope_head_dim) x bytes, the same on every rank
                 (GLM-5 BF16: 78 x 576 x 2 = 89,856)
        mla+dsa: mla + indexer layers x (index_head_dim + index_head_dim/128 x 4)
                 (GLM-5 BF16: 89,856 + 78 x 132 = 100,152; GLM-5.2: 89,856 + 21 x 132 = 92,628)
        msa:     gqa + sparse layers x index_head_dim x bytes (MiniMax-M3 BF16: 2x60x4x128x2 + 57x128x2
                 = 122,880 + 14,592 = 137,472)
        """
        split, latent, index = self._kv_parts_per_token(bytes_per_element)
        L = self.num_hidden_layers
        return L * (split * self.kv_share_per_rank(tp) + latent) + self.num_index_layers * index

    def sparse_layout(self) -> tuple[int, int, float]:
        """(full-attention layers, sparse layers, tokens a sparse layer reads at most): gqa / mla all full;
        DSA every layer sparse with cap index_topk; MSA num_sparse_layers sparse with cap
        index_topk_blocks x index_block_size (MiniMax-M3: 57 layers read the top 16 x 128 = 2048)."""
        L = self.num_hidden_layers
        if self.attention == "mla+dsa":
            return 0, L, float(self.index_topk or 0)
        if self.attention == "msa":
            sparse = self.num_sparse_layers or 0
            return L - sparse, sparse, float((self.index_topk_blocks or 0) * (self.index_block_size or 0))
        return L, 0, 0.0

    def attended_layer_tokens(self, ctx: float) -> float:
        """Sum over layers of the tokens one query at context `ctx` attends to: full layers ctx,
        sparse layers min(ctx, cap)."""
        n_full, n_sparse, cap = self.sparse_layout()
        return n_full * ctx + n_sparse * min(ctx, cap)

    def attention_read_bytes(self, ctx: float, bytes_per_element: float = 2.0, tp: int = 1) -> float:
        """KV bytes one decoding sequence reads per step at context `ctx`, on one of `tp` ranks.

        attended layer-tokens x per-layer KV bytes (the rank's split share, or the whole latent) + the
        index keys of all ctx tokens in every indexer layer (the indexer scores every token to pick
        its top-k). gqa / mla: ctx x kv_bytes_per_token. GLM-5 BF16 at ctx 8192: 78 x 2048 x 1152
        + 78 x 8192 x 132 = 184.0M + 84.3M bytes, not 8192 x 100,152 = 820M.
        """
        split, latent, index = self._kv_parts_per_token(bytes_per_element)
        per_layer_token = split * self.kv_share_per_rank(tp) + latent
        return self.attended_layer_tokens(ctx) * per_layer_token + self.num_index_layers * ctx * index

    def _attention_flops_coefficients(self) -> tuple[float, float]:
        """(FLOPs per attended layer-token, indexer FLOPs per context token over all indexer layers).

        gqa / msa: 4 x H x head_dim (QK^T and PV, 2 FLOPs per multiply-add);
        mla / mla+dsa, absorbed (decode) form: 2 x H x (kv_lora + rope) + 2 x H x kv_lora;
        indexer: 2 x index_heads x index_head_dim per indexer layer.
        """
        H = self.num_attention_heads
        if self.attention in ("mla", "mla+dsa"):
            r_kv = self.kv_lora_rank or 0
            per = 2.0 * H * (r_kv + (self.qk_rope_head_dim or 0)) + 2.0 * H * r_kv
        else:
            per = 4.0 * H * self.head_dim
        index = 2.0 * (self.index_n_heads or 0) * (self.index_head_dim or 0) * self.num_index_layers
        return per, index

    def attention_flops_per_token(self, ctx: float) -> float:
        """Attention FLOPs of one query token at context `ctx`, whole replica (a TP rank does 1/tp):
        per-layer-token FLOPs x attended layer-tokens + indexer FLOPs x ctx."""
        per, index = self._attention_flops_coefficients()
        return per * self.attended_layer_tokens(ctx) + index * ctx

    def prefill_attention_flops(self, n: float) -> float:
        """Attention FLOPs of a causal prefill of n prompt tokens: sum over positions i < n of
        attention_flops_per_token(i), with S(n) = n^2/2 for uncapped terms and, for a sparse cap k < n,
        S_k(n) = k^2/2 + k x (n - k) (every query past position k reads exactly k tokens)."""
        if n <= 0:
            return 0.0
        per, index = self._attention_flops_coefficients()
        n_full, n_sparse, cap = self.sparse_layout()
        capped = n * n / 2.0 if n <= cap else cap * cap / 2.0 + cap * (n - cap)
        return per * (n_full * n * n / 2.0 + n_sparse * capped) + index * n * n / 2.0


class Published(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    total_params_b: float
    active_params_b: float | None = None
    kv_kib_per_token_bf16: float | None = None
    active_counts_embeddings: bool = False  # the published active figure includes embeddings + LM head
    source: str = ""
    source_date: str = ""


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

    def active_params_published_convention(self) -> int:
        """active_params, plus embeddings and LM head when the vendor's figure counts them."""
        extra = self.hp.embedding_params() if self.published and self.published.active_counts_embeddings else 0
        return self.hp.active_params() + extra

    def summary(self) -> dict[str, Any]:
        hp = self.hp
        pub = self.published
        return {
            "model": self.name,
            "architecture": self.architecture,
            "attention": hp.attention,
            "twin_of": self.twin_of or "",
            "total_params_b": round(in_billions(hp.total_params()), 4),
            "active_params_b": round(in_billions(self.active_params_published_convention()), 4),
            "mtp_params_b": round(in_billions(hp.mtp_params()), 4),
            "published_total_b": pub.total_params_b if pub else None,
            "published_active_b": pub.active_params_b if pub else None,
            "kv_bytes_per_token_bf16": int(hp.kv_bytes_per_token(2)),
            "kv_kib_per_token_bf16": bytes_to_kib(hp.kv_bytes_per_token(2)),
            "max_context": hp.max_position_embeddings,
        }


class _ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    hf_id: str | None = None
    architecture: str
    model_type: str
    attention: AttentionType = "gqa"
    sources: list[str] = Field(default_factory=list)
    published: Published | None = None
    hyperparameters: dict[str, Any]
    tiny: dict[str, Any] = Field(default_factory=dict)
    # more twins: the tiny one with a few hyperparameters changed, each {name, overrides, deviations}
    # (e.g. glm-4.5-tiny-mtp: the twin with its MTP layer, for speculative decoding)
    tiny_variants: list[dict[str, Any]] = Field(default_factory=list)


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
    where = ""
    try:
        f = _ModelFile(**data)
        where = "hyperparameters"
        out[f.name] = ModelSpec(
            name=f.name, hf_id=f.hf_id, architecture=f.architecture, model_type=f.model_type,
            hyperparameters=Hyperparameters(**{**f.hyperparameters, "attention": f.attention}),
            published=f.published,
        )
        if f.tiny:
            where = "tiny.hyperparameters"
            tname = f.tiny.get("name", f"{f.name}-tiny")
            out[tname] = ModelSpec(
                name=tname, architecture=f.tiny.get("architecture", f.architecture),
                model_type=f.tiny.get("model_type", f.model_type),
                hyperparameters=Hyperparameters(**{**f.tiny["hyperparameters"], "attention": f.attention}),
                twin_of=f.name, deviations=f.tiny.get("deviations"),
            )
        for var in f.tiny_variants:
            where = f"tiny_variants.{var.get('name')}"
            twin = out[f.tiny.get("name", f"{f.name}-tiny")]
            hp = {**f.tiny["hyperparameters"], **var.get("overrides", {}), "attention": f.attention}
            out[var["name"]] = ModelSpec(name=var["name"], architecture=twin.architecture, model_type=twin.model_type,
                                         hyperparameters=Hyperparameters(**hp), twin_of=f.name,
                                         deviations=var.get("deviations"))
    except ValidationError as e:  # one line naming the file and the field
        raise UserInputError(base.format_validation_error(f"{path}: invalid model file", e, field=where, top_level="",
                                                          more=False)) from None
    except Exception as e:  # anything else -> still one line naming the file
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


def uncataloged_note(ref: str) -> str | None:
    """The note for a hub id or local directory the catalog does not know: it is served and measured
    (throughput, cost), but the planner and KV-cache figures need its hyperparameters."""
    if ref in load_models():
        return None
    return (f"model {ref!r} is not in the catalog: throughput and cost are measured, but planner and "
            "KV-cache figures are unavailable for it (add a models/<name>.yaml to the catalog for them)")


def check_model_ref(ref: str, where: str = "model") -> None:
    """A model reference is a catalog name, an existing local directory, or a hub id (org/name)."""
    if ref in load_models() or Path(ref).expanduser().is_dir() or HUB_ID.match(ref):
        return
    raise UserInputError(
        f"{where}: unknown model {ref!r}; use a catalog name ({', '.join(load_models())}), "
        "a local model directory, or a hub id like org/name"
    )
