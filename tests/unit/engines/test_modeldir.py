"""Local model dirs: exact word-level tokenizer, config.json, quantization config, caching."""

import json

from bench.engines.modeldir import hf_config, load_tokenizer, materialize, vocabulary
from bench.measure.workloads import PromptFactory


def test_materialize_is_cached_by_content(tmp_path):
    a = materialize("glm-4.5-tiny", None, tmp_path)
    b = materialize("glm-4.5-tiny", None, tmp_path)
    c = materialize("glm-4.5-tiny", "int8-w8a8", tmp_path)
    assert a == b and a != c
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["architectures"] == ["Glm4MoeForCausalLM"] and cfg["n_routed_experts"] == 16
    assert "quantization_config" not in cfg
    qc = json.loads((c / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"


def test_prompt_of_n_words_is_n_tokens(tmp_path):
    import random

    tok = load_tokenizer(materialize("glm-4.5-tiny", None, tmp_path))
    f = PromptFactory.for_vocab_size(2048)
    for n in (1, 7, 128, 1000):
        assert len(tok.encode(f.make(n, random.Random(n)), add_special_tokens=False).ids) == n


def test_vocabulary_has_exact_size_and_unique_words():
    v = vocabulary(2048)
    assert len(v) == 2048 == len(set(v))


def test_minimax_twin_uses_softmax_routing():
    from bench.config.catalog import get_model

    cfg = hf_config(get_model("minimax-m2-tiny"), None)
    assert cfg["scoring_func"] == "softmax" and cfg["use_routing_bias"] is False
    assert cfg["num_local_experts"] == 16
