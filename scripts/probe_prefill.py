"""Prefill kernel probes for MLA + DeepSeek sparse attention (GLM-5.x) on one TP rank.

Why: the planner prefills GLM-5 / GLM-5.2 4-5x faster than the published runs (8k prompt: planner
~0.17 s, published ~0.8 s on 8xH200 TP8). Its prefill model is GEMM FLOPs at gemm_max x T/(T+half) plus
absorbed-MLA and indexer FLOPs, all divided by tp. The kernels real engines run for these shapes do
not split like that: the indexer and the q/kv down projections are replicated on every TP rank, and
vLLM's FlashMLA-sparse backend runs a prefill with < 32 heads/rank (TP8: 8) through its FP8 kernel, which
takes 64 or 128 heads, so the heads are padded (vllm/v1/attention/backends/mla/flashmla_sparse.py,
MIN_HEADS_FOR_BF16_PREFILL; its BF16 prefill kernel pads to 128). This script measures, per layer on
one rank of a TP group (shapes read from configs/models/<model>.yaml):

- mla_dense: causal SDPA prefill in MHA form (q/k head dim nope+rope, v dim), heads/rank = heads/tp,
  and all heads (DP attention, one GPU per group), per SDPA backend (flash / efficient / cudnn);
- indexer: lightning-indexer scores for L queries x L keys (q [L, I, D] . k [L, D] -> relu -> weighted
  sum over the I heads -> causal mask -> top-k per row), BF16 matmul and FP8 (torch._scaled_mm),
  score and top-k timed apart;
- mla_sparse: absorbed (MQA-latent) attention of each query over top-k gathered tokens of the
  kv_lora + rope latent, at the real heads/rank and padded to 64 (gather + bmm, in query chunks), and
  the same FLOPs without the gather (one shared block of top-k tokens: the kernel's compute bound);
- moe: routed-expert grouped GEMMs (gate_up + SiLU + down) for T prompt tokens, TP layout (every
  expert, intermediate/tp wide) and EP layout (experts/tp experts, full width), BF16 and FP8 rowwise;
- proj: the attention projections at M = 8192 tokens (fused q_a + kv_a and indexer wq_b replicated, q_b /
  kv_b / o split by tp), BF16 and FP8 per-tensor.
Each row: ms per layer, useful FLOPs and the achieved fraction of the datasheet peak. Timing: median of
CUDA-graph replays (scripts/probe_kernels.py `_time_ms`), eager where capture fails (`timing` says).
Run: python3 scripts/probe_prefill.py --tflops-bf16 989 --tflops-fp8 1979 --hbm-gb-s 4800 --out x.json
(--tiny: small shapes on the CPU, checks the script runs).
"""

# ruff: noqa: B023, F821 - each probe closure is timed (called) inside the iteration that defines it;
# the `del` at the end of an iteration only frees GPU memory before the next shapes.
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_kernels import _time_ms  # noqa: E402 - the one timing helper of the probe scripts

ROOT = Path(__file__).resolve().parent.parent
F8 = getattr(torch, "float8_e4m3fn", None)


def read_hyperparameters(model: str) -> dict[str, int]:
    """`hyperparameters:` of configs/models/<model>.yaml (PyYAML when present; else the flat block)."""
    text = (ROOT / "configs" / "models" / f"{model}.yaml").read_text()
    try:
        import yaml

        return dict(yaml.safe_load(text)["hyperparameters"])
    except ImportError:
        out, inside = {}, False
        for line in text.splitlines():
            if line.startswith("hyperparameters:"):
                inside = True
            elif inside and line.startswith("  ") and ":" in line:
                k, v = line.split("#")[0].split(":", 1)
                v = v.strip()
                out[k.strip()] = int(v) if v.lstrip("-").isdigit() else v
            elif inside and line.strip() and not line.startswith(" "):
                break
        return out


class Ctx:
    def __init__(self, device: str, tflops_bf16: float, tflops_fp8: float, hbm_gb_s: float, reps: int):
        self.device, self.bf16, self.fp8, self.hbm, self.reps = device, tflops_bf16, tflops_fp8, hbm_gb_s, reps

    def row(self, probe: str, fn: Callable[[], object], flops: float, peak: str, **kw: object) -> dict:
        """Time `fn` and return one result row; an exception becomes an `error` row (one probe must
        not lose the others)."""
        try:
            ms, mode = _time_ms(fn, self.device, self.reps)
        except Exception as ex:  # noqa: BLE001
            return {"probe": probe, **kw, "error": repr(ex)[:300]}
        tf = self.bf16 if peak == "bf16" else self.fp8
        out = {"probe": probe, **kw, "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 1),
               "frac_" + peak: round(flops / (ms * 1e-3) / (tf * 1e12), 3), "timing": mode}
        if kw.get("bytes"):
            out["bw_frac"] = round(float(kw["bytes"]) / (ms * 1e-3) / (self.hbm * 1e9), 3)
        return out

    def free(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()


def fp8_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 e4m3 with one float32 scale per row (the last dim is quantized)."""
    s = x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-6) / 448.0
    return (x.float() / s).to(F8), s.squeeze(-1).float()


def mla_dense(c: Ctx, hp: dict, tp: int, lengths: list[int]) -> list[dict]:
    """Causal SDPA prefill in MHA form: q/k dim nope+rope, v dim; heads/tp and all heads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dt, dqk, dv = torch.bfloat16, hp["qk_nope_head_dim"] + hp["qk_rope_head_dim"], hp["v_head_dim"]
    out = []
    for heads in sorted({hp["num_attention_heads"] // tp, hp["num_attention_heads"]}):
        for L in lengths:
            q = torch.randn(1, heads, L, dqk, device=c.device, dtype=dt)
            k, v = torch.randn_like(q), torch.randn(1, heads, L, dv, device=c.device, dtype=dt)
            flops = 2.0 * heads * L * L / 2 * (dqk + dv)  # causal: half the score matrix
            for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
                be = getattr(SDPBackend, name)

                def run() -> torch.Tensor:
                    with sdpa_kernel([be]):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

                out.append(c.row("mla_dense_causal", run, flops, "bf16", heads=heads, L=L, qk_dim=dqk,
                                 v_dim=dv, backend=name.lower()))
            del q, k, v
            c.free()
    return out


def indexer(c: Ctx, hp: dict, lengths: list[int], chunk: int) -> list[dict]:
    """Lightning indexer of an L-token prefill (replicated on every TP rank): score, then top-k."""
    nh, d, topk = hp["index_n_heads"], hp["index_head_dim"], hp["index_topk"]
    dt, out = torch.bfloat16, []
    for L in lengths:
        q = torch.randn(L, nh, d, device=c.device, dtype=dt)
        k = torch.randn(L, d, device=c.device, dtype=dt)
        w = torch.randn(L, nh, device=c.device, dtype=torch.float32)
        causal = torch.ones(L, L, device=c.device, dtype=torch.bool).triu(1)
        kk = min(topk, L)
        flops = 2.0 * L * nh * d * L  # the full rectangle (a kernel that skips the causal half does 1/2)
        q8, qs = fp8_rowwise(q.reshape(L * nh, d)) if F8 else (None, None)
        k8, ks = fp8_rowwise(k) if F8 else (None, None)
        scores = torch.empty(L, L, device=c.device, dtype=torch.float32)
        one = torch.ones((), device=c.device)

        def score(fp8: bool) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                for s in range(0, L, chunk):
                    e = min(s + chunk, L)
                    if fp8:
                        lg = torch._scaled_mm(q8[s * nh:e * nh], k8.t(), one, one, out_dtype=dt)
                        lg = lg.float() * qs[s * nh:e * nh, None] * ks[None, :]
                    else:
                        lg = (q[s:e].reshape(-1, d) @ k.t()).float()
                    lg = torch.relu(lg).view(e - s, nh, L)
                    scores[s:e] = torch.einsum("qhl,qh->ql", lg, w[s:e]).masked_fill_(causal[s:e], -math.inf)
                return scores
            return run

        def pick() -> torch.Tensor:
            return torch.topk(scores, kk, dim=-1).indices

        def both() -> torch.Tensor:
            score(False)()
            return pick()

        out.append(c.row("indexer_score", score(False), flops, "bf16", L=L, heads=nh, dim=d, precision="bf16"))
        out.append(c.row("indexer_score", score(True), flops, "fp8", L=L, heads=nh, dim=d, precision="fp8"))
        out.append(c.row("indexer_topk", pick, 0.0, "bf16", L=L, topk=kk, bytes=L * L * 4))
        out.append(c.row("indexer_score_topk", both, flops, "bf16", L=L, heads=nh, dim=d, topk=kk))
        del q, k, w, causal, scores, q8, k8
        c.free()
    return out


def mla_sparse(c: Ctx, hp: dict, tp: int, lengths: list[int], chunk: int) -> list[dict]:
    """Absorbed sparse MLA: each query (h heads sharing one latent) over top-k gathered latent tokens."""
    r, rope, topk = hp["kv_lora_rank"], hp["qk_rope_head_dim"], hp["index_topk"]
    dl, dt, out = r + rope, torch.bfloat16, []
    real = hp["num_attention_heads"] // tp
    for heads in sorted({real, max(real, 64 if c.device == "cuda" else real * 2), hp["num_attention_heads"]}):
        for L in lengths:
            kk = min(topk, L)
            kv = torch.randn(L, dl, device=c.device, dtype=dt)
            q = torch.randn(L, heads, dl, device=c.device, dtype=dt)
            idx = torch.randint(0, L, (L, kk), device=c.device)
            scale = 1.0 / math.sqrt(dl)
            o = torch.empty(L, heads, r, device=c.device, dtype=dt)

            def gathered() -> torch.Tensor:
                for s in range(0, L, chunk):
                    kv_sel = kv[idx[s:s + chunk]]  # [n, k, dl]
                    p = torch.softmax(torch.bmm(q[s:s + chunk], kv_sel.transpose(1, 2)).float() * scale, -1)
                    o[s:s + chunk] = torch.bmm(p.to(dt), kv_sel[:, :, :r])
                return o

            blk = kv[:kk]

            def shared() -> torch.Tensor:  # the same FLOPs, no gather: the compute bound
                for s in range(0, L, chunk):
                    qq = q[s:s + chunk].reshape(-1, dl)
                    p = torch.softmax((qq @ blk.t()).float() * scale, -1)
                    o[s:s + chunk] = (p.to(dt) @ blk[:, :r]).view(-1, heads, r)
                return o

            useful = 2.0 * real * L * kk * (dl + r)  # the real heads/rank's FLOPs (padding is waste)
            kw = {"L": L, "topk": kk, "heads_run": heads, "heads_useful": real, "latent": dl}
            out.append(c.row("mla_sparse_gather", gathered, useful, "bf16", **kw, bytes=2 * L * kk * dl * 2))
            out.append(c.row("mla_sparse_shared", shared, useful, "bf16", **kw))
            del kv, q, idx, o, blk
            c.free()
    return out


def moe(c: Ctx, hp: dict, tp: int, tokens: list[int]) -> list[dict]:
    """Routed experts of a T-token prefill on one rank: TP (all experts, inter/tp) and EP (E/tp experts)."""
    h, inter, E, k = hp["hidden_size"], hp["moe_intermediate_size"], hp["n_routed_experts"], hp["num_experts_per_tok"]
    out = []
    for layout, n_exp, width in (("tp", E, inter // tp), ("ep", E // tp, inter)):
        w_gu = torch.randn(n_exp, 2 * width, h, device=c.device, dtype=torch.bfloat16) * 0.02  # [G, N, K]
        w_dn = torch.randn(n_exp, h, width, device=c.device, dtype=torch.bfloat16) * 0.02
        g8u, g8us = fp8_rowwise(w_gu) if F8 else (None, None)
        g8d, g8ds = fp8_rowwise(w_dn) if F8 else (None, None)
        for t in tokens:
            choice = torch.rand(t, E).topk(k, dim=-1).indices.flatten()
            counts = torch.bincount(choice, minlength=E)[:n_exp]  # EP: the first E/tp experts live here
            rows = ((counts + 15) // 16 * 16).tolist()  # FP8 grouped GEMMs want 16-row groups
            offs = torch.tensor(rows, dtype=torch.int32).cumsum(0).to(torch.int32).to(c.device)
            m = int(sum(rows))
            x = torch.randn(m, h, device=c.device, dtype=torch.bfloat16)
            x8, xs = fp8_rowwise(x) if F8 else (None, None)
            flops = 2.0 * 3 * h * width * int(counts.sum())  # the routed rows, not the padding

            def bf16() -> torch.Tensor:
                hh = torch._grouped_mm(x, w_gu.transpose(1, 2), offs=offs)
                a = torch.nn.functional.silu(hh[:, :width]) * hh[:, width:]
                return torch._grouped_mm(a, w_dn.transpose(1, 2), offs=offs)

            def fp8() -> torch.Tensor:
                hh = torch._scaled_grouped_mm(x8, g8u.transpose(1, 2), xs, g8us, offs=offs, out_dtype=torch.bfloat16)
                a = torch.nn.functional.silu(hh[:, :width]) * hh[:, width:]
                a8, as_ = fp8_rowwise(a)
                return torch._scaled_grouped_mm(a8, g8d.transpose(1, 2), as_, g8ds, offs=offs,
                                                out_dtype=torch.bfloat16)

            kw = {"layout": layout, "tokens": t, "experts": n_exp, "width": width, "rows_padded": m}
            out.append(c.row("moe_prefill", bf16, flops, "bf16", precision="bf16", **kw))
            out.append(c.row("moe_prefill", fp8, flops, "fp8", precision="fp8", **kw))
            del x, x8
        del w_gu, w_dn, g8u, g8d
        c.free()
    return out


def proj(c: Ctx, hp: dict, tp: int, m: int) -> list[dict]:
    """Attention-side projections at M = m tokens on one rank (K x N; replicated ones not split)."""
    h, H = hp["hidden_size"], hp["num_attention_heads"] // tp
    rq, rkv, rope = hp["q_lora_rank"], hp["kv_lora_rank"], hp["qk_rope_head_dim"]
    dqk = hp["qk_nope_head_dim"] + rope
    shapes = {"fused_q_a_kv_a (replicated)": (h, rq + rkv + rope), "q_b": (rq, H * dqk),
              "kv_b": (rkv, H * (hp["qk_nope_head_dim"] + hp["v_head_dim"])), "o": (H * hp["v_head_dim"], h),
              "indexer_wq_b (replicated)": (rq, hp["index_n_heads"] * hp["index_head_dim"])}
    out = []
    for name, (kd, n) in shapes.items():
        x = torch.randn(m, kd, device=c.device, dtype=torch.bfloat16)
        w = torch.randn(n, kd, device=c.device, dtype=torch.bfloat16) * 0.02
        flops = 2.0 * m * kd * n
        out.append(c.row("proj", lambda: x @ w.t(), flops, "bf16", name=name, M=m, K=kd, N=n, precision="bf16"))
        if F8:
            x8, w8 = x.to(F8), w.to(F8)
            one = torch.ones((), device=c.device)
            out.append(c.row("proj", lambda: torch._scaled_mm(x8, w8.t(), one, one, out_dtype=torch.bfloat16),
                             flops, "fp8", name=name, M=m, K=kd, N=n, precision="fp8"))
        del x, w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="glm-5", help="configs/models/<model>.yaml (an mla+dsa model)")
    ap.add_argument("--tp", type=int, default=8, help="tensor-parallel ranks the heads are split over")
    ap.add_argument("--tflops-bf16", type=float, default=989.0, help="datasheet dense BF16 TFLOPS of this GPU")
    ap.add_argument("--tflops-fp8", type=float, default=1979.0, help="datasheet dense FP8 TFLOPS of this GPU")
    ap.add_argument("--hbm-gb-s", type=float, default=4800.0, help="datasheet HBM bandwidth of this GPU, GB/s")
    ap.add_argument("--lengths", default="2048,8192,16384", help="prompt lengths L (comma-separated)")
    ap.add_argument("--reps", type=int, default=10, help="timed replays per probe (median)")
    ap.add_argument("--only", default="dense,indexer,sparse,moe,proj", help="probe groups to run")
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU: checks the script runs")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    hp = read_hyperparameters(a.model)
    lengths = [int(x) for x in a.lengths.split(",")]
    chunk_q, chunk_s = 1024, 512
    if a.tiny:
        hp = {**hp, "hidden_size": 64, "num_attention_heads": 16, "q_lora_rank": 32, "kv_lora_rank": 32,
              "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 24, "index_n_heads": 4,
              "index_head_dim": 16, "index_topk": 32, "moe_intermediate_size": 64, "n_routed_experts": 16,
              "num_experts_per_tok": 4}
        lengths, chunk_q, chunk_s = [64, 128], 48, 40
    c = Ctx(device, a.tflops_bf16, a.tflops_fp8, a.hbm_gb_s, 3 if a.tiny else a.reps)
    res: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
                 "model": a.model, "tp": a.tp, "peaks": {"tflops_bf16": a.tflops_bf16, "tflops_fp8": a.tflops_fp8,
                                                         "hbm_gb_s": a.hbm_gb_s},
                 "hyperparameters": hp, "lengths": lengths, "results": []}
    groups = set(a.only.split(","))
    t0 = time.perf_counter()
    steps = [("dense", lambda: mla_dense(c, hp, a.tp, lengths)),
             ("indexer", lambda: indexer(c, hp, lengths, chunk_q)),
             ("sparse", lambda: mla_sparse(c, hp, a.tp, lengths, chunk_s)),
             ("moe", lambda: moe(c, hp, a.tp, [x for x in lengths if x <= 8192] or lengths[:1])),
             ("proj", lambda: proj(c, hp, a.tp, 8192 if not a.tiny else 64))]
    for name, fn in steps:
        if name not in groups:
            continue
        try:
            res["results"] += fn()
        except Exception as ex:  # noqa: BLE001 - record and go on
            res["results"].append({"probe": name, "error": repr(ex)[:300]})
        print(f"# {name} done at {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        if a.out:  # after every group: a run cut off by a time limit keeps what it measured
            Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
