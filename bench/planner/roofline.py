"""Analytical roofline: the configuration, GPU peaks and formulas behind every planner estimate.

Why: the MaaS team must price GLM-4.6 on 8xH200 or MiniMax-M2 on 4xH100 before renting them. This
module turns the catalog's real hyperparameters (bench.config.catalog) and the GPU peaks
(configs/hardware.yaml) into memory fit, TTFT, TPOT and tokens/s/GPU, and corrects itself with
efficiency factors fitted from measured runs (configs/roofline.yaml). Every result carries
`source: "estimate"`, so a report never confuses it with a measurement.

Modules: this one states the model and re-exports its pieces; bench.planner.factors holds the
configuration (quantization presets, engine factors, the published-run fit, GPU peaks),
bench.planner.deployment the per-GPU formulas and the memory fit, bench.planner.serving the serving
formulas at a concurrency; bench.planner.estimate turns them into a throughput-latency curve and a
plan (with money); bench.planner.calibrate and bench.planner.fit fit the factors from measured and
published runs. Quantization presets (bits) come from THE registry, bench.config.quant.

The model (stated once, here; units in every name):

- Weights: the decoder stack (attention, dense FFNs, experts, routers, norms) at the preset's
  `weight_bits`; embeddings and LM head at 16 bits. Multi-token-prediction layers are not loaded
  (no speculative decoding). Tensor parallelism (TP) and expert parallelism (EP) both split the
  weights evenly over the `tp` GPUs of a replica; `count / tp` replicas serve independently.
- Memory fit per GPU: memory_gb (datasheet "GB" ~ GiB: an H100 reports 79.6 GiB) x
  gpu_memory_utilization - weights - reserve_gib = KV budget. KV bytes/token/GPU =
  Hyperparameters.kv_bytes_per_token(kv_bits/8, tp), per attention type (bench.config.catalog): GQA
  KV split over TP by KV heads (replicated when tp > kv heads); an MLA latent and sparse-attention
  index keys on every rank. Max concurrent sequences = floor(budget / (KV per token x (ISL + OSL))).
- One engine step that decodes `n_dec` sequences at mean context `ctx` and prefills `n_pre`
  prompt tokens moves: the always-used weights (attention, dense FFNs, shared experts, routers,
  LM head) + the routed experts it touches + the KV it reads (Hyperparameters.attention_read_bytes:
  sparse attention (DSA, MSA) reads only the selected tokens' KV plus every token's index key). With
  top-k of E experts and T
  tokens in the step, a MoE layer touches E * (1 - (1 - k/E)^T) distinct experts in expectation.
  FLOPs: 2 x active params per token (GEMMs, at the preset's tensor peak) + attention
  (Hyperparameters.attention_flops_per_token / prefill_attention_flops, BF16 peak: GQA 4 x heads x
  head_dim x context per layer, MLA in absorbed form, sparse layers capped at the selected tokens)
  + 2 x hidden x vocab for each token whose logits are computed (decodes and the last prompt token).
  Per GPU these are split over tp EXCEPT the work the engines replicate on every rank of an attention
  group (MLA/DSA only; bench.planner.rank_work states the engine assumptions with their vLLM source):
  the MLA q/kv down-projection, the DSA indexer projections and its causal n^2/2 (decode: ctx) scores,
  which run over the group's tokens/D on each rank; and sparse (DSA) attention runs max(H/attn_tp,
  sparse_mla_min_heads) heads per rank (FlashMLA-sparse pads to 64 heads on Hopper).
  Time = max(bytes / (HBM x bandwidth_efficiency), FLOPs / (peak x compute_efficiency))
  + communication + step_overhead_ms.
- Communication per layer: two ring all-reduces of tokens x hidden x 2 bytes:
  2 (tp-1)/tp x bytes / (link x interconnect_efficiency) + collective_latency_us each; with EP the
  MoE one becomes an all-to-all dispatch + combine of k copies (Deployment.all_to_all_bytes: a GPU's
  tokens x hidden x 2 B x k, (tp-1)/tp of it leaving the GPU). A group larger than the scale-up domain
  (the GPU's `scale_up_gpus`, 72 on an NVL72 rack; else `gpus_per_node`, 8) runs at the scale-out
  bandwidth (`scale_out_gb_s`, else `inter_node_gb_s`) + `inter_node_latency_us`.
- Wide EP (Deployment.dense_data_parallel; default on with EP and DP attention when tp exceeds
  gpus_per_node): only the routed experts are spread over the tp GPUs; everything else (attention, dense
  FFN layers, shared experts, routers, embeddings, LM head) belongs to an attention group, held over its
  attn_tp GPUs, streamed for the group's tokens/D and all-reduced within the group (none at attn_tp 1).
    weights/GPU = (replica weights - routed experts) / attn_tp + routed experts / tp
- Serving at closed-loop concurrency C (split evenly over replicas; B = min(C per replica, max
  sequences)): TPOT = step(B decodes) + (B-1)/OSL x marginal prefill time of one prompt (the other
  requests' prefills interleave with my decode steps; chunked prefill); TTFT = one step that
  prefills ISL tokens next to B-1 decodes, plus queueing when C exceeds B (Little's law:
  wait = (C/B - 1) x E2EL). E2EL = TTFT + (OSL - 1) x TPOT; output tok/s/GPU = B x OSL / E2EL / tp.
- DP attention (Deployment.dp_attention = D > 1; SGLang `--tp T --dp D --enable-dp-attention`, vLLM
  `--data-parallel-size D --enable-expert-parallel`): the tp GPUs of a replica form D attention groups
  of a = tp/D GPUs. Each group holds the attention weights (projections, norms, indexers) split a ways
  (so replicated D times), the KV of ITS OWN sequences only, and runs attention for its 1/D share of
  the batch (balanced); MoE and dense-FFN weights are split over all tp GPUs as without it.
    weights/GPU = (replica weights - attention weights) / tp + attention weights / a
    KV bytes/token/GPU = kv_bytes_per_token(tp=a)  (GQA split over a, an MLA latent on each of them)
    max sequences/replica = D x floor(KV budget per GPU / (KV bytes/token/GPU x (ISL + OSL)))
    decode KV read per GPU = (n_dec / D) x attention_read_bytes(ctx, tp=a)
  (GLM-5, BF16 MLA: 78 x (512 + 64) x 2 = 89,856 B of latent per token on every GPU of a group; at
  tp 8 a GPU holds every sequence's latent, with D = 8 only its group's 1/8.) FLOPs per GPU are
  unchanged (a group's tokens/D over a GPUs = tokens/tp). Collectives: the attention all-reduce runs
  within a group over its tokens/D (none when a = 1); with EP the MoE all-to-all moves k copies of a
  GPU's tokens/D; dense layers all-reduce all tokens over tp.
- Burst (one wave; `burst=True`, a published run with num_prompts <= concurrency): N = C per replica
  requests sent at once (N <= max sequences). Prompts are prefilled one per wave step w (a step that
  prefills ISL tokens next to (N-1)/2 decodes, the wave's mean), each prefilled sequence emitting L
  tokens per step, then decode steps d (batch N). Duration = N x w + (OSL - 1) x d / L; output tok/s =
  N x OSL / duration per replica; mean TTFT = (N+1)/2 x w (queue-bound); mean TPOT = d/L + m (w - d) /
  (OSL - 1), m = (N-1)/2 (bench.planner.serving.burst_latencies_s). Arrival spread is ignored (the
  server is prefill-bound when w exceeds the gap between sends).
"""

from __future__ import annotations

from bench.planner.deployment import (
    GIB,
    Deployment,
    MemoryFit,
    expected_experts_touched,
    memory_fit,
)
from bench.planner.factors import (
    ROOFLINE_CONFIG,
    CalibratedEntry,
    Efficiency,
    GpuPeaks,
    QuantSpec,
    RooflineConfig,
    calibration_key,
    efficiency_for,
    get_gpu,
    load_roofline_config,
    resolve_quant,
)
from bench.planner.serving import PointRaw, latencies_s, point_raw

__all__ = [
    "GIB", "ROOFLINE_CONFIG", "CalibratedEntry", "Deployment", "Efficiency", "GpuPeaks", "MemoryFit", "PointRaw",
    "QuantSpec", "RooflineConfig", "calibration_key", "efficiency_for", "expected_experts_touched", "get_gpu",
    "latencies_s", "load_roofline_config", "memory_fit", "point_raw", "resolve_quant",
]
