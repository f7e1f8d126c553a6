"""Materialize a local model directory for `--load-format dummy` runs, without any download.

vLLM with dummy weights still needs a `config.json` (architecture and shapes), a tokenizer and,
for chat, a template. We write them from the catalog's hyperparameters. The tokenizer is a
word-level vocabulary built with the `tokenizers` library: one whitespace-separated word is one
token, so a prompt of N words is exactly N prompt tokens and re-tokenizing streamed output text
recovers the server's token count. That exactness is what lets tests compare client and server
token accounting, and lets workloads size prompts in tokens without a hub tokenizer.

Directories are cached by a content hash of everything written, so a second run reuses them
and a changed config can never be served from a stale directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.config import quant as quant_registry
from bench.config.base import stable_hash
from bench.config.catalog import CATALOG_ONLY_KEYS, ModelSpec, get_model, load_models
from bench.config.vocab import SPECIAL_TOKENS, vocabulary
from bench.errors import UserInputError

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TOKENIZER_VERSION = 1  # bump when the vocabulary (bench.config.vocab) or the tokenizer construction changes

# The quantization_config written into config.json per quantization lives in THE registry
# (bench.config.quant: checkpoint_config). fp8 has none: vLLM quantizes BF16 weights on the fly
# with `--quantization fp8`. The names below stay as views for callers and tests.
INT8_W8A8 = quant_registry.INT8_W8A8_CONFIG
INT8_W8A8_DENSE = quant_registry.INT8_W8A8_DENSE_CONFIG
CHECKPOINT_QUANT_CONFIGS: dict[str, dict[str, Any]] = {
    q.name: q.checkpoint_config for q in quant_registry.QUANTIZATIONS.values() if q.checkpoint_config
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("MAAS_BENCH_CACHE", Path.home() / ".cache" / "maas-bench")) / "models"


def build_tokenizer_json(vocab_size: int) -> str:
    """A word-level fast tokenizer (tokenizer.json) with whitespace splitting."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = vocabulary(vocab_size)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok.to_str()


def hf_config(model: ModelSpec, quantization: str | None) -> dict[str, Any]:
    """config.json contents for vLLM / transformers, from catalog hyperparameters."""
    # catalog bookkeeping (attention type, indexer layer counts) and unset fields are not config.json keys
    hp = {k: v for k, v in model.hp.model_dump().items() if v is not None and k not in CATALOG_ONLY_KEYS}
    eos_id = SPECIAL_TOKENS.index("<|endoftext|>")
    cfg: dict[str, Any] = {
        "architectures": [model.architecture],
        "model_type": model.model_type,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "initializer_range": 0.02,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "use_cache": True,
    }
    if model.model_type == "glm4_moe":
        cfg.update(hp)
        cfg.update({"n_group": 1, "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 1.0,
                    "use_qk_norm": False})
    elif model.model_type == "glm4":
        cfg.update({k: v for k, v in hp.items() if k not in _MOE_KEYS})
    elif model.model_type == "minimax_m2":
        cfg.update({k: v for k, v in hp.items() if k not in _MOE_KEYS})
        cfg.update({
            "num_local_experts": hp["n_routed_experts"],
            "num_experts_per_tok": hp["num_experts_per_tok"],
            "intermediate_size": hp["moe_intermediate_size"],
            "use_routing_bias": hp.get("scoring_func", "sigmoid") == "sigmoid",
            "scoring_func": hp.get("scoring_func", "sigmoid"),
            "use_qk_norm": False,
            "num_mtp_modules": 0,
        })
    elif model.model_type == "glm_moe_dsa":
        # GLM-5.x (transformers GlmMoeDsaConfig; vLLM switches DSA on by the presence of index_topk)
        cfg.update(hp)
        cfg.update({"n_group": 1, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
                    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "moe_layer_freq": 1,
                    "indexer_rope_interleave": True, "attention_bias": False,
                    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}})
    elif model.model_type == "minimax_m3_vl":
        cfg["text_config"] = _minimax_m3_text_config(model, hp, cfg)
        cfg["tie_word_embeddings"] = hp.get("tie_word_embeddings", False)
    else:
        cfg.update(hp)
    if (qc := quant_registry.checkpoint_config(quantization)) is not None:
        cfg["quantization_config"] = qc
    return cfg


def _minimax_m3_text_config(model: ModelSpec, hp: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """MiniMax-M3's text tower (vLLM MiniMaxM3TextConfig names): the expert width is `intermediate_size`,
    the dense FFN `dense_intermediate_size`, and MSA lives in `sparse_attention_config` (sparse layers
    are the last num_sparse_layers; the index value branch is off in them, as in the released config)."""
    m = model.hp
    L, sparse = m.num_hidden_layers, m.num_sparse_layers or 0
    dense = m.num_dense_layers
    pattern = [0] * (L - sparse) + [1] * sparse
    return {
        "model_type": "minimax_m3_text", "torch_dtype": "bfloat16",
        "vocab_size": m.vocab_size, "hidden_size": m.hidden_size,
        "intermediate_size": m.moe_intermediate_size, "dense_intermediate_size": m.intermediate_size,
        "shared_intermediate_size": m.moe_intermediate_size,
        "num_hidden_layers": L, "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads, "head_dim": m.head_dim,
        "max_position_embeddings": m.max_position_embeddings, "rms_norm_eps": 1e-6, "use_gemma_norm": True,
        "attention_output_gate": False, "rope_theta": 5000000, "rotary_dim": hp.get("rotary_dim", m.head_dim // 2),
        "partial_rotary_factor": 0.5, "hidden_act": "swigluoai", "swiglu_alpha": 1.702, "swiglu_limit": 7.0,
        "use_qk_norm": True, "qk_norm_type": "per_head",
        "num_local_experts": m.n_routed_experts, "num_experts_per_tok": m.num_experts_per_tok,
        "n_shared_experts": m.n_shared_experts, "scoring_func": hp.get("scoring_func", "sigmoid"),
        "use_routing_bias": True, "routed_scaling_factor": 2.0, "num_mtp_modules": 0,
        "moe_layer_freq": [0] * dense + [1] * (L - dense),
        "sparse_attention_config": {
            "use_sparse_attention": True, "sparse_index_dim": m.index_head_dim,
            "sparse_num_index_heads": m.index_n_heads, "sparse_topk_blocks": m.index_topk_blocks,
            "sparse_block_size": m.index_block_size, "sparse_disable_index_value": pattern,
            "sparse_score_type": "max", "sparse_init_block": 0, "sparse_local_block": 1,
            "sparse_attention_freq": pattern,
        },
        "tie_word_embeddings": False, "bos_token_id": base["bos_token_id"], "eos_token_id": base["eos_token_id"],
    }


_MOE_KEYS = {"moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
             "first_k_dense_replace", "num_nextn_predict_layers", "scoring_func"}


def check_model_dir_name(name: str) -> None:
    """A catalog model's name names its twin's directory under the cache (`<name>-<quant>-<hash>`), so it must
    be one plain path component: a `--config-dir` model named `../x` or `/tmp/x` wrote its directory outside
    the cache. UserInputError (one line) otherwise; bench.sweep.prepare calls it before anything starts."""
    bad = next((c for c in ("/", "\\", "\x00") if c in name), None)
    if bad is not None or name.startswith(".") or not name.strip():
        what = f"contains {bad!r}" if bad is not None else ("starts with '.'" if name.startswith(".") else "is blank")
        raise UserInputError(f"model {name!r}: its name {what}; a catalog model's name names its dummy-weights "
                             "directory and must be one plain path component (no '/', '\\', NUL, leading '.')")


def materialize(model: ModelSpec | str, quantization: str | None = None, cache_dir: Path | None = None) -> Path:
    """Write (or reuse) a model dir for `model` with an optional checkpoint quantization_config."""
    spec = get_model(model) if isinstance(model, str) else model
    files: dict[str, str] = {
        "config.json": json.dumps(hf_config(spec, quantization), indent=2, sort_keys=True),
        "tokenizer.json": build_tokenizer_json(spec.hp.vocab_size),
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": spec.hp.max_position_embeddings,
            "unk_token": "<unk>", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        }, indent=2, sort_keys=True),
        "generation_config.json": json.dumps({"eos_token_id": SPECIAL_TOKENS.index("<|endoftext|>")}),
    }
    digest = stable_hash({"files": files, "v": TOKENIZER_VERSION}, length=16)
    root = cache_dir or default_cache_dir()
    check_model_dir_name(spec.name)
    target = root / f"{spec.name}-{quantization or 'bf16'}-{digest}"
    if target.parent != root:  # pragma: no cover - check_model_dir_name keeps it one component
        raise UserInputError(f"model {spec.name!r}: its directory would be outside {root}")
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its directory is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(ref: str, quantization: str | None, cache_dir: Path | None = None) -> tuple[str, bool]:
    """Return (path or hub id to serve, whether it was materialized from the catalog)."""
    if ref in load_models():
        return str(materialize(ref, quantization, cache_dir)), True
    return ref, False


def load_tokenizer(model_path: str | Path) -> Any:
    """A local tokenizer for client-side counting and prompt sizing (never from a hub)."""
    path = Path(model_path)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path / "tokenizer.json"))
    return None
