"""The current generation (GLM-4.7, GLM-5.x, MiniMax-M2.5/M2.7/M3): parameter counts against published
totals, KV bytes per token by hand for each attention type (gqa, mla, mla+dsa, msa), sparse-attention
reads and FLOPs by hand, memory fit, and bad model files.

Golden numbers come from the vendors (published totals: vLLM recipes, HF safetensors sizes) or from
arithmetic written out in each test, never from the code under test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.config.catalog import Hyperparameters, get_model, load_models, uncataloged_note
from bench.errors import UserInputError
from bench.planner.estimate import estimate
from bench.planner.roofline import GIB, Deployment, get_gpu, memory_fit, resolve_quant

# (model, published total B, published active B): vLLM recipes (models/zai-org/*.yaml, models/MiniMaxAI/*.yaml)
PUBLISHED = [
    ("glm-4.7", 358, 32), ("glm-5", 744, 40), ("glm-5.1", 744, 40), ("glm-5.2", 743, 39),
    ("minimax-m2.5", 230, 10), ("minimax-m2.7", 230, 10), ("minimax-m3", 427, 26),
]
NEW = [m for m, _, _ in PUBLISHED]


@pytest.mark.parametrize("name, total_b, active_b", PUBLISHED)
def test_params_within_3pct_of_published(name, total_b, active_b):
    m = get_model(name)
    assert m.hp.total_params() / 1e9 == pytest.approx(total_b, rel=0.03)
    # MiniMax-M3's 26B counts embeddings + LM head (the recipe sums "embeddings 2.46B"); the others do not
    assert m.active_params_published_convention() / 1e9 == pytest.approx(active_b, rel=0.03)


def test_minimax_m3_active_without_embeddings_is_the_cards_23b():
    # the model card's "~23B activated" is the non-embedding count; 2 x 200064 x 6144 = 2.458B apart
    m = get_model("minimax-m3")
    assert m.hp.active_params() / 1e9 == pytest.approx(23, rel=0.03)
    assert m.active_params_published_convention() - m.hp.active_params() == 2 * 200064 * 6144


def test_glm51_stack_plus_mtp_matches_safetensors():
    # GLM-5.1 BF16 safetensors: 753,864,139,008 parameters including the one MTP layer (282 shards)
    hp = get_model("glm-5.1").hp
    assert hp.total_params() + hp.mtp_params() == pytest.approx(753_864_139_008, rel=1e-4)
    assert hp.mtp_params() / 1e9 == pytest.approx(9.95, abs=0.01)


def test_minimax_m25_stack_matches_hf_safetensors_without_mtp():
    # HF API: 228,703,644,928 parameters; the 3 MTP modules of the config are not shipped
    hp = get_model("minimax-m2.5").hp
    assert hp.total_params() == pytest.approx(228_703_644_928, rel=1e-3)
    assert hp.mtp_params() == 0


def test_mla_attention_params_by_hand():
    # GLM-5: h 6144, H 64, q_lora 2048, kv_lora 512, nope 192, rope 64, v 256
    h, H = 6144, 64
    by_hand = (h * 2048 + 2048 * H * 256 + 2048  # q down, q up, q_a norm
               + h * (512 + 64) + 512 * H * (192 + 256) + 512  # kv down, kv up, kv_a norm
               + H * 256 * h + 2 * h)  # o_proj, the layer's two RMSNorms
    assert get_model("glm-5").hp.attention_params_per_layer() == by_hand


def test_dsa_indexer_counted_only_where_it_exists():
    # indexer: wq_b 2048 x 32 x 128 + wk 6144 x 128 + weights_proj 6144 x 32 + k_norm (weight, bias) 2 x 128
    one = 2048 * 32 * 128 + 6144 * 128 + 6144 * 32 + 256
    g5, g52 = get_model("glm-5").hp, get_model("glm-5.2").hp
    assert g5.indexer_params_per_layer() == one
    # GLM-5.2 shares indexers: 21 of 78 layers own one, hence 744B -> 743B
    assert g5.total_params() - g52.total_params() == (78 - 21) * one


# --- KV bytes per token, by hand ---------------------------------------------------------------------


def test_kv_bytes_mla_dsa_glm5():
    hp = get_model("glm-5").hp
    latent = 78 * (512 + 64) * 2  # 89,856 B: the figure
    index = 78 * (128 + 128 // 128 * 4)  # FP8 index key + one FP32 scale per 128, every layer
    assert latent == 89_856
    assert hp.kv_bytes_per_token(2) == latent + index == 100_152
    # the latent is not split by heads: every one of 8 TP ranks holds all of it
    assert hp.kv_bytes_per_token(2, tp=8) == 100_152
    # FP8 KV halves the latent; the index keys are FP8 already
    assert hp.kv_bytes_per_token(1, tp=8) == 78 * 576 + index


def test_kv_bytes_glm52_index_keys_only_in_indexer_layers():
    assert get_model("glm-5.2").hp.kv_bytes_per_token(2) == 78 * 576 * 2 + 21 * 132


def test_kv_bytes_plain_mla_has_no_index_keys():
    hp = Hyperparameters(attention="mla", hidden_size=1024, num_hidden_layers=10, num_attention_heads=16,
                         num_key_value_heads=16, head_dim=64, vocab_size=1000, kv_lora_rank=256,
                         qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64)
    assert hp.kv_bytes_per_token(2) == 10 * (256 + 32) * 2
    assert hp.kv_bytes_per_token(2, tp=4) == 10 * (256 + 32) * 2


def test_kv_bytes_msa_minimax_m3():
    hp = get_model("minimax-m3").hp
    gqa = 2 * 60 * 4 * 128 * 2  # K and V, 60 layers, 4 KV heads x 128, BF16
    index = 57 * 128 * 2  # one shared index key head per sparse layer
    assert hp.kv_bytes_per_token(2) == gqa + index == 137_472
    # TP8 over 4 KV heads: each rank holds one KV head (a quarter); the index keys are on every rank
    assert hp.kv_bytes_per_token(2, tp=8) == gqa / 4 + index


def test_kv_bytes_gqa_new_models():
    assert get_model("glm-4.7").hp.kv_bytes_per_token(2) == 2 * 92 * 8 * 128 * 2
    assert get_model("minimax-m2.7").hp.kv_bytes_per_token(2) == 2 * 62 * 8 * 128 * 2
    assert get_model("minimax-m2.5").hp.kv_bytes_per_token(2, tp=4) == 2 * 62 * 8 * 128 * 2 / 4


# --- attention reads and FLOPs at decode / prefill ---------------------------------------------------


def test_dsa_decode_reads_topk_latents_plus_all_index_keys():
    hp = get_model("glm-5").hp
    # ctx 8192 > top-k 2048: 78 layers x 2048 latents x 1152 B + 78 indexer layers x 8192 keys x 132 B
    assert hp.attention_read_bytes(8192, 2) == 78 * 2048 * 1152 + 78 * 8192 * 132
    # below the top-k every token is read
    assert hp.attention_read_bytes(1000, 2) == 78 * 1000 * 1152 + 78 * 1000 * 132


def test_msa_decode_reads_selected_blocks_in_sparse_layers():
    hp = get_model("minimax-m3").hp
    per_layer_token = 2 * 4 * 128 * 2  # K and V of 4 KV heads, BF16
    expected = (3 * 100_000 + 57 * 16 * 128) * per_layer_token + 57 * 100_000 * 128 * 2
    assert hp.attention_read_bytes(100_000, 2) == expected


def test_gqa_decode_read_is_context_times_kv():
    hp = get_model("glm-4.7").hp
    assert hp.attention_read_bytes(5000, 2, tp=8) == 5000 * 2 * 92 * 1 * 128 * 2


def test_dsa_decode_flops_capped_at_topk():
    hp = get_model("glm-5").hp
    per = 2 * 64 * (512 + 64) + 2 * 64 * 512  # absorbed MLA: QK over latent+rope, PV over latent
    index = 2 * 32 * 128 * 78  # indexer scores every context token in 78 layers
    assert hp.attention_flops_per_token(100_000) == per * 78 * 2048 + index * 100_000
    # past the cap, attention FLOPs grow only by the indexer's share
    assert hp.attention_flops_per_token(200_000) - hp.attention_flops_per_token(100_000) == index * 100_000


def test_prefill_flops_causal_sums_by_hand():
    gqa = Hyperparameters(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, vocab_size=100)
    # full causal: 4 x H x d x L x n^2/2
    assert gqa.prefill_attention_flops(100) == 4 * 4 * 16 * 2 * 100 * 100 / 2
    dsa = Hyperparameters(attention="mla+dsa", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, head_dim=8, vocab_size=100, kv_lora_rank=16,
                          qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, index_n_heads=2,
                          index_head_dim=8, index_topk=10)
    per = 2 * 4 * (16 + 8) + 2 * 4 * 16
    # positions 0..29: sum(min(i, 10)) = 0+1+...+9 + 20 x 10 = 45 + 200, vs the formula's 10^2/2 + 10 x 20 = 250
    # (the continuous sum); the indexer sums i over 0..29 -> 30^2/2
    assert dsa.prefill_attention_flops(30) == per * 2 * 250 + 2 * 2 * 8 * 2 * 30 * 30 / 2


# --- memory fit ----------------------------------------------------------------------------------------


def _fit(model: str, quant: str, gpu: str = "h200", tp: int = 8, ctx: int = 9216):
    dep = Deployment(hp=get_model(model).hp, gpu=get_gpu(gpu), quant=resolve_quant(quant), tp=tp)
    return dep, memory_fit(dep, ctx)


def test_glm52_fp8_fits_8xh200_and_bf16_does_not():
    hp = get_model("glm-5.2").hp
    dep, fit = _fit("glm-5.2", "fp8")
    stack, emb = hp.layer_stack_params(active_only=False), 2 * 154880 * 6144
    assert fit.weights_gib_per_gpu == pytest.approx((stack * 1 + emb * 2) / 8 / GIB)  # FP8 stack, BF16 embeddings
    assert fit.fits and fit.max_concurrent_seqs > 0
    _, bf16 = _fit("glm-5.2", "bf16")
    # BF16 weights alone (~1.49 TB / 8 = ~173 GiB) exceed an H200's 141 GB
    assert bf16.weights_gib_per_gpu > get_gpu("h200").memory_gb and not bf16.fits


def test_latent_kv_is_replicated_so_tp_does_not_grow_capacity_per_gpu():
    _, f8 = _fit("glm-5", "fp8", tp=8)
    # KV per token per GPU: the whole latent + index keys on every rank (BF16 KV in the fp8 preset)
    assert f8.kv_kib_per_token_per_gpu == pytest.approx(100_152 / 1024)


def test_minimax_m3_fits_8xh200_in_bf16():
    _, fit = _fit("minimax-m3", "bf16")
    assert fit.fits and fit.kv_kib_per_token_per_gpu == pytest.approx((122_880 / 4 + 14_592) / 1024)


def test_sparse_decode_step_stops_growing_with_context():
    dep = Deployment(hp=get_model("glm-5.2").hp, gpu=get_gpu("h200"), quant=resolve_quant("fp8"), tp=8)
    a, b = dep.step_raw(1, 100_000).memory_s, dep.step_raw(1, 200_000).memory_s
    # only the index keys of the extra 100k tokens are read: 21 layers x 100,000 x 132 B, on each GPU
    assert (b - a) * get_gpu("h200").hbm_gb_s * 1e9 == pytest.approx(21 * 100_000 * 132, rel=1e-9)


@pytest.mark.parametrize("name", ["glm-5.2", "minimax-m3", "minimax-m2.5", "glm-4.7"])
def test_estimates_cover_new_models(name):
    est = estimate(name, "h200", 8, "fp8", 8192, 1024, concurrencies=[1, 16])
    assert est.memory.fits and all(p.output_tok_s_per_gpu > 0 for p in est.curve)


# --- catalog shape and bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_new_models_have_twins_of_same_architecture_and_attention(name):
    models = load_models()
    twin = models[f"{name}-tiny"]
    assert twin.twin_of == name and twin.architecture == models[name].architecture
    assert twin.hp.attention == models[name].hp.attention and twin.hp.total_params() < 50e6


def test_attention_types_of_new_models():
    types = {n: get_model(n).hp.attention for n in NEW}
    assert types == {"glm-4.7": "gqa", "glm-5": "mla+dsa", "glm-5.1": "mla+dsa", "glm-5.2": "mla+dsa",
                     "minimax-m2.5": "gqa", "minimax-m2.7": "gqa", "minimax-m3": "msa"}


def test_models_json_lists_attention_and_kv(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "models", "--json"], capture_output=True, text=True,
                         check=True).stdout
    import json

    rows = {r["model"]: r for r in json.loads(out)}
    assert rows["glm-5.2"]["attention"] == "mla+dsa" and rows["glm-5.2"]["kv_bytes_per_token_bf16"] == 92_628
    assert rows["minimax-m3"]["published_active_b"] == 26


GOOD_MLA = """name: x
architecture: GlmMoeDsaForCausalLM
model_type: glm_moe_dsa
attention: {attention}
hyperparameters:
  hidden_size: 64
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 4
  head_dim: 8
  vocab_size: 100
  {extra}qk_nope_head_dim: 8
  qk_rope_head_dim: 8
  v_head_dim: 8
"""


@pytest.mark.parametrize("attention, extra, field", [
    ("banana", "kv_lora_rank: 16\n  ", "attention"),
    ("mla", "", "kv_lora_rank"),
    ("mla+dsa", "kv_lora_rank: 16\n  ", "index_n_heads"),
])
def test_bad_model_file_one_line_exit_2(tmp_path, attention, extra, field):
    models = tmp_path / "models"
    models.mkdir()
    (models / "x.yaml").write_text(GOOD_MLA.format(attention=attention, extra=extra))
    with pytest.raises(UserInputError, match=field):
        load_models(models)
    r = subprocess.run([sys.executable, "-m", "bench", "--config-dir", str(tmp_path), "models"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "x.yaml" in lines[0] and field in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_hub_model_gets_a_note_not_an_error():
    note = uncataloged_note("someorg/SomeModel-9B")
    assert note is not None and "planner" in note and "KV" in note
    assert uncataloged_note("glm-5.2") is None


def test_sparse_twin_config_json_shapes():
    from bench.engines.modeldir import hf_config

    g = hf_config(get_model("glm-5.2-tiny"), None)
    assert g["architectures"] == ["GlmMoeDsaForCausalLM"] and g["index_topk"] == 64 and "attention" not in g
    m3 = hf_config(get_model("minimax-m3-tiny"), None)
    sac = m3["text_config"]["sparse_attention_config"]
    assert sac["sparse_block_size"] == 128 and sac["sparse_attention_freq"] == [0, 1, 1, 1]
    assert m3["text_config"]["intermediate_size"] == 128 and m3["text_config"]["dense_intermediate_size"] == 512
    # MiniMax-M2.5 and M2.7 twins are the same engine path: identical config.json
    assert hf_config(get_model("minimax-m2.5-tiny"), None) == hf_config(get_model("minimax-m2.7-tiny"), None)
    # GLM-4.7 changed no architecture field that a twin carries: its twin is the GLM-4.5 twin, byte for byte
    # (so the e2e suite runs it once, as the session server)
    assert hf_config(get_model("glm-4.7-tiny"), None) == hf_config(get_model("glm-4.5-tiny"), None)


# --- GPU sweep configs for the new models ----------------------------------------------------------------


@pytest.mark.parametrize("path, gpu, need, model", [
    ("configs/sweeps/glm52-fp8-8xh200.yaml", "h200", 8, "glm-5.2"),
    ("configs/sweeps/minimax-m25-4xh100.yaml", "h100", 4, "minimax-m2.5"),
    ("configs/sweeps/minimax-m3-8xh200.yaml", "h200", 8, "minimax-m3"),
])
def test_gpu_sweeps_fail_fast_without_their_gpus(path, gpu, need, model):
    from bench.config.sweep import load_sweep
    from bench.sweep.run import check_local_gpus

    sweep = load_sweep(path)
    assert {s.model for s in sweep.server_specs()} == {model} and sweep.hardware.gpu == gpu
    with pytest.raises(UserInputError, match=f"needs {need}x {gpu}.*found 0: no NVIDIA GPU"):
        check_local_gpus(sweep, inventory=[])
    # fewer of the right GPU, or the wrong GPU: still refused, naming what was found
    with pytest.raises(UserInputError, match=f"found {need - 1}"):
        check_local_gpus(sweep, inventory=[f"NVIDIA {gpu.upper()} 80GB HBM3"] * (need - 1))
    other = "NVIDIA H20" if gpu == "h200" else "NVIDIA H200"
    with pytest.raises(UserInputError, match="found 0"):
        check_local_gpus(sweep, inventory=[other] * need)
    check_local_gpus(sweep, inventory=[f"NVIDIA {gpu.upper()}"] * need)  # the right machine passes


def test_minimax_m3_sweep_passes_block_size_128():
    from bench.config.sweep import load_sweep

    args = load_sweep("configs/sweeps/minimax-m3-8xh200.yaml").engine.extra_args
    assert args[args.index("--block-size") + 1] == "128"


def test_price_book_has_the_new_models_with_sources():
    from bench.config.prices import load_price_book

    book = load_price_book().prices
    for key in ("glm-4.7@zai", "glm-5@zai", "glm-5.1@zai", "glm-5.2@zai", "glm-4.7@bigmodel", "glm-5@bigmodel",
                "glm-5.1@bigmodel", "glm-5.2@bigmodel", "minimax-m2.5@minimax", "minimax-m2.7@minimax",
                "minimax-m3@minimax"):
        assert book[key].source and book[key].source_date, key
    # MiniMax-M3: the whole request moves to the long-context rate past 512K input (a cliff)
    m3 = book["minimax-m3@minimax"]
    assert m3.prices_for(500_000, 1000).output_per_m == 1.20
    assert m3.prices_for(600_000, 1000).output_per_m == 2.40
    # bigmodel GLM-4.7: input < 32K with output < 200 is the cheap tier; a longer output moves the whole request
    g47 = book["glm-4.7@bigmodel"]
    assert g47.prices_for(8192, 100).output_per_m == 8.0 and g47.prices_for(8192, 1024).output_per_m == 14.0
    assert book["glm-5.1@bigmodel"].prices_for(40_000, 1000).cached_input_per_m == 2.0
    # GLM-5.3 and GLM-5-Turbo (docs.z.ai pricing as quoted in pydantic/genai-prices #574 and litellm #29381)
    g53 = book["glm-5.3@zai"].prices_for(8192, 1024)
    assert (g53.output_per_m, g53.cached_input_per_m) == (4.40, 0.26)
    assert book["glm-5-turbo@zai"].prices_for(8192, 1024).input_per_m == 1.20
    assert book["glm-5-turbo@bigmodel"].prices_for(40_000, 1000).output_per_m == 26.0
