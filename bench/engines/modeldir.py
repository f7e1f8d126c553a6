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
from bench.config.catalog import ModelSpec, get_model, load_models

SPECIAL_TOKENS = ("<unk>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TOKENIZER_VERSION = 1  # bump when the vocabulary construction changes

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


def vocabulary(vocab_size: int) -> list[str]:
    """Special tokens, then deterministic pronounceable words (ba, be, ... baba, babe, ...)."""
    consonants, vowels = "bdfghklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words: list[str] = []
    n_words = vocab_size - len(SPECIAL_TOKENS)
    for a in syllables:
        for b in [""] + syllables:
            words.append(a + b)
            if len(words) == n_words:
                return list(SPECIAL_TOKENS) + words
    raise ValueError(f"vocab_size {vocab_size} is larger than this generator supports")


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
    hp = model.hp.model_dump()
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
    else:
        cfg.update(hp)
    if (qc := quant_registry.checkpoint_config(quantization)) is not None:
        cfg["quantization_config"] = qc
    return cfg


_MOE_KEYS = {"moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
             "first_k_dense_replace", "num_nextn_predict_layers", "scoring_func"}


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
    target = root / f"{spec.name}-{quantization or 'bf16'}-{digest}"
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
