"""Per-rank work that tensor parallelism does NOT split, for MLA / DSA models (engine assumptions).

Why: the planner divided every FLOP of a step by tp and prefilled an 8k GLM-5 prompt on 8xH200 in
~0.17 s where the published vLLM run needs ~0.7-0.8 s. The engines do not split these parts: read in
vLLM (vllm/model_executor/models/deepseek_v2.py, vllm/v1/attention/backends/mla/flashmla_sparse.py,
2026-11-27) and stated here once; GQA and MSA models are unchanged (0 / factor 1 below).

1. MLA down-projection, replicated: `fused_qkv_a_proj` (h -> q_lora_rank + kv_lora_rank + rope; without
   q_lora only `kv_a_proj_with_mqa`, h -> kv_lora_rank + rope) is built with disable_tp (ReplicatedLinear):
   every rank of an attention group runs it over all the group's tokens.
     params/layer = h x (q_lora_rank + kv_lora_rank + qk_rope_head_dim)   (GLM-5: 6144 x 2624 = 16,121,856)
2. DSA lightning indexer, replicated (ReplicatedLinear wq_b / wk / weights_proj, per indexer layer
   catalog Hyperparameters.indexer_params_per_layer), and every rank scores every query against every
   earlier key: 2 x I x D FLOPs per (query, key) pair per indexer layer, n^2/2 pairs for a causal
   prefill of n tokens and ctx per decoding query (GLM-5 8k prefill: 2 x 32 x 128 x 8192^2/2 x 78 =
   21.4 TFLOP on EVERY rank). The top-k over the scores (vLLM top_k_per_row) is not modelled.
3. FlashMLA-sparse head padding: the sparse MLA kernels take h_q = 64 (SM90) or 128 (SM100 BF16 prefill)
   query heads; a rank with fewer heads is padded (`self.padding = 128 if is_device_capability(100)
   else 64`; with an FP8 cache and < MIN_HEADS_FOR_BF16_PREFILL = 32 heads every token goes through the
   FP8 decode kernel, which also takes 64 or 128). So a rank's sparse-attention work is that of
   max(H / attn_tp, pad) heads: GLM-5 TP8 (8 heads/rank) does 8x its share. `sparse_mla_min_heads`
   (configs/roofline.yaml: 64, B200 128). This is the kernel's constraint; SGLang with DP attention
   (64 heads on one rank) never pads.

Per GPU with DP attention D (attention groups of attn_tp = tp/D GPUs), the replicated parts run on the
group's tokens/D on every rank of the group (tokens/D, not tokens/tp); with attn_tp = 1 that equals the
split share, so DP attention with one GPU per group is unaffected by 1 and 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.catalog import Hyperparameters

_MLA = ("mla", "mla+dsa")


def replicated_down_params_per_layer(hp: Hyperparameters) -> int:
    """Assumption 1: the MLA q/kv down-projection of one layer (0 for other attention types)."""
    if hp.attention not in _MLA:
        return 0
    return hp.hidden_size * ((hp.q_lora_rank or 0) + (hp.kv_lora_rank or 0) + (hp.qk_rope_head_dim or 0))


def replicated_params(hp: Hyperparameters) -> int:
    """All GEMM weights a rank runs over all its group's tokens: MLA down-projections (every layer) +
    DSA indexers (every indexer layer). A subset of Deployment.attention_params()."""
    if hp.attention not in _MLA:
        return 0
    index = hp.num_index_layers * hp.indexer_params_per_layer() if hp.attention == "mla+dsa" else 0
    return hp.num_hidden_layers * replicated_down_params_per_layer(hp) + index


def indexer_score_flops(hp: Hyperparameters, n_queries: float, ctx: float,
                        n_prefill: float | Sequence[tuple[float, float]]) -> float:
    """Assumption 2, whole step on one rank: DSA index scores of n_queries decoding queries at context ctx
    plus a causal prefill of n_prefill tokens, or of prefill chunks given as (offset, tokens) pairs whose
    queries also score the offset tokens already cached ((o + n)^2/2 - o^2/2 each). The catalog's attention
    FLOPs include the same term (its per-context-token indexer coefficient, 2 x I x D x indexer layers); here
    it is taken out of the
    split attention because every rank does all of it. 0 for models without a DSA indexer."""
    if hp.attention != "mla+dsa":
        return 0.0
    _, per_ctx_token = hp._attention_flops_coefficients()
    chunks = [(0.0, float(n_prefill))] if isinstance(n_prefill, (int, float)) else n_prefill
    pairs = sum(((o + n) * (o + n) - o * o) / 2.0 for o, n in chunks)
    return per_ctx_token * (n_queries * ctx + pairs)


def sparse_head_factor(hp: Hyperparameters, attn_tp: int, min_heads: float) -> float:
    """Assumption 3: work a rank's sparse attention does / its share of the heads' useful work:
    max(H / attn_tp, min_heads) / (H / attn_tp) for DSA models, 1 otherwise (GQA, MLA, MSA)."""
    if hp.attention != "mla+dsa" or hp.num_attention_heads <= 0:
        return 1.0
    per_rank = hp.num_attention_heads / max(attn_tp, 1)
    return max(per_rank, min_heads) / per_rank
