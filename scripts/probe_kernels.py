"""Kernel probes for the planner's efficiency curves on the late-2026 model shapes (GLM-5.x, MiniMax-M3).

Why: the planner turns bytes and FLOPs into time through per-GPU efficiency curves. The H100/H200
priors in configs/roofline.yaml come from GLM-4.5 / MiniMax-M2 shapes; GLM-5.x (MLA latent attention,
DeepSeek sparse attention, 256 experts x 2048) and MiniMax-M3 (128 experts x 3072, block-sparse GQA)
have other shapes. This script measures, on whatever CUDA GPU it runs on:

- routed-expert GEMMs (gate_up + down over the experts a batch touches, uniform random top-k routing)
  in BF16, as a fraction of HBM peak (bytes of the touched experts / time / peak);
- MLA decode attention over a latent KV cache (kv_lora_rank + rope = 576 elements per token, the same
  on every TP rank), dense over the context and DSA-style over 2048 gathered tokens;
- GQA decode attention over 2048 selected tokens (MiniMax-M3 MSA: top 16 blocks of 128).

Each timing is the median of replays of a CUDA graph (no launch gaps) after warm-ups; where capture
fails it falls back to eager timing and says so. Output: one JSON document (stdout and --out).
Run: python scripts/probe_kernels.py --hbm-gb-s 4800 --out results.json   (--tiny: CPU syntax check)
"""

# ruff: noqa: B023, F821 - each probe closure is timed (called) inside the iteration that defines it;
# the `del` at the end of an iteration only frees GPU memory before the next shapes.
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import torch


def _time_ms(fn: Callable[[], object], device: str, reps: int = 20) -> tuple[float, str]:
    if device != "cuda":
        fn()
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(t), "eager-cpu"
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        mode, run = "graph", g.replay
    except Exception:  # noqa: BLE001 - capture is best effort; eager timing is reported as such
        mode, run = "eager", fn
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), mode


def moe_probe(name: str, hidden: int, inter: int, experts: int, topk: int, tokens: list[int],
              device: str, peak_gb_s: float) -> list[dict]:
    """Routed experts: y = down(act(gate_up(x))) over the touched experts, grouped by expert."""
    dt = torch.bfloat16
    w_gu = torch.randn(experts, hidden, 2 * inter, device=device, dtype=dt) * 0.02
    w_dn = torch.randn(experts, inter, hidden, device=device, dtype=dt) * 0.02
    out = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for t in tokens:
        choice = torch.stack([torch.randperm(experts, generator=gen)[:topk] for _ in range(t)])
        counts = torch.bincount(choice.flatten(), minlength=experts)
        touched = torch.nonzero(counts).flatten()
        n_touched = int(touched.numel())
        rows = counts[touched]
        x = torch.randn(int(rows.sum()), hidden, device=device, dtype=dt)
        offs = torch.cumsum(rows, 0).to(torch.int32).to(device)
        gu, dn = w_gu[touched.to(device)].contiguous(), w_dn[touched.to(device)].contiguous()
        grouped = hasattr(torch, "_grouped_mm") and device == "cuda"

        def run_grouped() -> torch.Tensor:
            h = torch._grouped_mm(x, gu, offs=offs)
            a = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
            return torch._grouped_mm(a, dn, offs=offs)

        starts = [0] + offs.tolist()[:-1]
        ends = offs.tolist()

        def run_loop() -> torch.Tensor:
            ys = []
            for i in range(n_touched):
                h = x[starts[i]:ends[i]] @ gu[i]
                a = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
                ys.append(a @ dn[i])
            return torch.cat(ys)

        kernel = "grouped_mm"
        try:
            if not grouped:
                raise RuntimeError("no grouped_mm")
            ms, mode = _time_ms(run_grouped, device)
        except Exception:  # noqa: BLE001
            kernel = "per-expert loop"
            ms, mode = _time_ms(run_loop, device)
        bytes_moved = n_touched * 3 * hidden * inter * 2 + 2 * x.numel() * 2
        flops = 2 * 3 * hidden * inter * t * topk
        out.append({"probe": "moe_bf16", "model": name, "tokens": t, "experts_touched": n_touched,
                    "expected_touched": round(experts * (1 - (1 - topk / experts) ** t), 1),
                    "ms": round(ms, 4), "bw_frac": round(bytes_moved / (ms * 1e-3) / (peak_gb_s * 1e9), 3),
                    "tflops": round(flops / (ms * 1e-3) / 1e12, 1), "timing": mode, "kernel": kernel})
        del x, gu, dn
    del w_gu, w_dn
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def mla_probe(heads: int, latent: int, rope: int, batches: list[int], contexts: list[int], topk: int | None,
              device: str, peak_gb_s: float) -> list[dict]:
    """Absorbed MLA decode: scores = q . [c_kv, k_rope], out = P . c_kv; KV = (latent+rope) per token."""
    dt = torch.bfloat16
    d = latent + rope
    out = []
    for b in batches:
        for ctx in contexts:
            kv = torch.randn(b, ctx, d, device=device, dtype=dt)
            q = torch.randn(b, heads, d, device=device, dtype=dt)
            scale = 1.0 / math.sqrt(d)
            sel = min(topk, ctx) if topk else ctx
            idx = torch.stack([torch.randperm(ctx, device="cpu")[:sel] for _ in range(b)]).to(device) if topk else None

            def run() -> torch.Tensor:
                k = torch.gather(kv, 1, idx[:, :, None].expand(b, sel, d)) if idx is not None else kv
                s = torch.bmm(q, k.transpose(1, 2)) * scale
                p = torch.softmax(s.float(), dim=-1).to(dt)
                return torch.bmm(p, k[:, :, :latent])

            ms, mode = _time_ms(run, device)
            read = b * sel * d * 2 * (2 if idx is not None else 1)  # a gather reads and writes the selection
            out.append({"probe": "mla_decode" + ("_dsa" if topk else ""), "batch": b, "context": ctx,
                        "tokens_read": sel, "ms": round(ms, 4),
                        "bw_frac": round(b * sel * d * 2 / (ms * 1e-3) / (peak_gb_s * 1e9), 3),
                        "bw_frac_incl_gather": round(read / (ms * 1e-3) / (peak_gb_s * 1e9), 3), "timing": mode})
            del kv, q
    return out


def gqa_probe(heads: int, kv_heads: int, head_dim: int, batches: list[int], ctx: int, device: str,
              peak_gb_s: float) -> list[dict]:
    dt = torch.bfloat16
    out = []
    for b in batches:
        q = torch.randn(b, heads, 1, head_dim, device=device, dtype=dt)
        k = torch.randn(b, kv_heads, ctx, head_dim, device=device, dtype=dt)
        v = torch.randn_like(k)

        def run() -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)

        ms, mode = _time_ms(run, device)
        kv_bytes = 2 * b * kv_heads * ctx * head_dim * 2
        out.append({"probe": "gqa_decode_selected", "batch": b, "context": ctx, "ms": round(ms, 4),
                    "bw_frac": round(kv_bytes / (ms * 1e-3) / (peak_gb_s * 1e9), 3), "timing": mode})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hbm-gb-s", type=float, default=4800.0, help="datasheet HBM bandwidth of this GPU, GB/s")
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU: checks the script runs")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    res: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                 "torch": torch.__version__, "hbm_gb_s": a.hbm_gb_s, "results": []}
    r = res["results"]
    if a.tiny:
        r += moe_probe("tiny", 64, 32, 16, 4, [1, 8], device, a.hbm_gb_s)
        r += mla_probe(4, 32, 8, [1, 2], [64], None, device, a.hbm_gb_s)
        r += mla_probe(4, 32, 8, [2], [128], 16, device, a.hbm_gb_s)
        r += gqa_probe(8, 2, 16, [1, 2], 32, device, a.hbm_gb_s)
    else:
        toks = [1, 8, 32, 64, 128, 256, 512, 2048]
        for name, h, i, e, k in (("glm-5", 6144, 2048, 256, 8), ("minimax-m3", 6144, 3072, 128, 4)):
            try:
                r += moe_probe(name, h, i, e, k, toks, device, a.hbm_gb_s)
            except Exception as ex:  # noqa: BLE001 - record and go on: one probe must not lose the others
                r.append({"probe": "moe_bf16", "model": name, "error": repr(ex)[:300]})
        for topk in (None, 2048):
            try:
                r += mla_probe(64, 512, 64, [1, 16, 64, 128], [2048, 8192, 32768], topk, device, a.hbm_gb_s)
            except Exception as ex:  # noqa: BLE001
                r.append({"probe": "mla", "topk": topk, "error": repr(ex)[:300]})
        try:
            r += gqa_probe(64, 4, 128, [1, 16, 64, 128], 2048, device, a.hbm_gb_s)
        except Exception as ex:  # noqa: BLE001
            r.append({"probe": "gqa", "error": repr(ex)[:300]})
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
