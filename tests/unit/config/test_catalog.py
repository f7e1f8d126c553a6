"""Parameter and KV-cache formulas against published figures (shared/reference/models.md)."""

import pytest

from bench.config.catalog import check_model_ref, get_model, load_models
from bench.errors import UserInputError

REAL = ["glm-4.5", "glm-4.6", "glm-4.5-air", "glm-4-9b-0414", "minimax-m2"]


@pytest.mark.parametrize("name", REAL)
def test_total_params_within_3pct_of_published(name):
    m = get_model(name)
    assert m.hp.total_params() / 1e9 == pytest.approx(m.published.total_params_b, rel=0.03)


@pytest.mark.parametrize("name, published_b", [("glm-4.5", 32), ("glm-4.5-air", 12), ("minimax-m2", 10)])
def test_active_params_close_to_published(name, published_b):
    assert get_model(name).hp.active_params() / 1e9 == pytest.approx(published_b, rel=0.05)


@pytest.mark.parametrize("name, kib", [("glm-4.5", 368), ("glm-4.6", 368), ("glm-4.5-air", 184),
                                       ("glm-4-9b-0414", 40), ("minimax-m2", 248)])
def test_kv_bytes_per_token_bf16(name, kib):
    # 2 (K,V) x layers x kv_heads x head_dim x 2 bytes, e.g. GLM-4.5: 2*92*8*128*2 = 376832 B = 368 KiB
    assert get_model(name).hp.kv_bytes_per_token(2) == kib * 1024


def test_dense_layer_count_hand_check():
    # GLM-4.5-Air: 46 layers, first 1 dense -> 45 MoE layers; one expert = 3*4096*1408 = 17,301,504
    hp = get_model("glm-4.5-air").hp
    assert hp.num_dense_layers == 1 and hp.num_moe_layers == 45
    assert hp.expert_params() == 17_301_504


def test_every_real_model_has_a_tiny_twin_of_same_architecture():
    models = load_models()
    for name in REAL:
        twin = models[f"{name}-tiny"]
        assert twin.twin_of == name
        assert twin.architecture == models[name].architecture
        assert twin.hp.total_params() < 50e6


def test_model_refs():
    check_model_ref("glm-4.5-tiny")
    check_model_ref("zai-org/GLM-4.5-Air")
    with pytest.raises(UserInputError, match="unknown model 'nope'"):
        check_model_ref("nope")
