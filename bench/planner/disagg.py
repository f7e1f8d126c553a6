"""Disaggregated prefill / decode (xPyD) in the planner: the KV link between the pools, their simulation
and the search over pool ratios and parallelism that `plan --disagg` prints next to aggregated serving.

Why a module of its own: aggregated serving (bench.planner.estimate) runs prefill and decode on the same
engines, where a long prompt's prefill steps stretch every running decode (TPOT) and decodes hold the
token budget a prompt waits for (TTFT). Disaggregation gives each phase its own pool, sized and
parallelized for it, at the price of moving each prompt's KV between the pools. The engines are
bench.planner.scheduler's EngineSim as configured by bench.planner.simulate; the two pools run in one
event queue (bench.planner.cluster.PoolCluster, which states the request's path).

The model (stated once, here):
- KV transfer of one request: every GPU of the prefill replica sends what it holds of the prompt's KV in
  parallel over its own link, so the time is KV bytes per token per GPU (the catalog's formula per
  attention type at the prefill replica's attention TP: GQA split over the ranks, an MLA latent whole on
  each; FP8 KV halves it) x prompt tokens / link GB/s + link latency. One prefill engine sends one prompt
  at a time (its transfers queue on its link).
- The link: NVLink / Infinity Fabric (`interconnect_gb_s` of configs/hardware.yaml) when every GPU of both
  pools sits in one scale-up domain (`scale_up_gpus`, else roofline.yaml `gpus_per_node`); else the
  scale-out network (`scale_out_gb_s`, else roofline.yaml `inter_node_gb_s`). Latency: the GPU's
  `scale_up_latency_us` / `scale_out_latency_us` where recorded, else roofline.yaml's
  `collective_latency_us` (+ `inter_node_latency_us` across nodes).
- The decode pool's KV capacity limits its batch: a prefilled request waits (FIFO) until a decode engine
  has room for its prompt's blocks; the TTFT the client sees ends with the decode engine's first step.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.errors import UserInputError
from bench.planner.cluster import PoolCluster
from bench.planner.deployment import Deployment, memory_fit
from bench.planner.estimate import CurvePoint, meets_slo
from bench.planner.factors import Efficiency, GpuPeaks
from bench.planner.scheduler import SimRequest
from bench.units import BYTES_PER_GB, MS_PER_S, us_to_s

REPLICA_SIZES = (1, 2, 4, 8, 16, 32, 64, 72)  # GPUs per replica the search tries (72: one NVL72 rack)
SIZES_PER_POOL = 2  # the smallest this many replica sizes that fit the model, per pool (bounds the search)


# --- the link and one transfer ------------------------------------------------------------------------


@dataclass(frozen=True)
class KvLink:
    """The link a prompt's KV crosses between the pools: per-GPU GB/s one direction, latency."""

    kind: str  # "scale-up" or "scale-out"
    gb_s: float
    latency_us: float
    source: str


def kv_link(gpu: GpuPeaks, eff: Efficiency, gpus: int) -> KvLink:
    """The link between pools of `gpus` GPUs in all (module docstring)."""
    domain = int(getattr(gpu, "scale_up_gpus", None) or eff.gpus_per_node)
    if gpus <= domain:
        bw = getattr(gpu, "interconnect_gb_s", None)
        if bw is None:
            raise UserInputError(f"gpus.{gpu.id}.interconnect_gb_s: not recorded in configs/hardware.yaml; the KV "
                                 "transfer between pools inside one scale-up domain needs it (give it in your "
                                 "hardware.yaml, --config-dir)")
        lat = getattr(gpu, "scale_up_latency_us", None)
        return KvLink("scale-up", float(bw), float(eff.collective_latency_us if lat is None else lat),
                      f"{gpus} GPUs within the {domain}-GPU scale-up domain: interconnect_gb_s"
                      + ("" if lat is not None else ", latency roofline.yaml collective_latency_us"))
    bw = getattr(gpu, "scale_out_gb_s", None)
    lat = getattr(gpu, "scale_out_latency_us", None)
    return KvLink("scale-out", float(bw or eff.inter_node_gb_s),
                  float(eff.collective_latency_us + eff.inter_node_latency_us if lat is None else lat),
                  f"{gpus} GPUs exceed the {domain}-GPU scale-up domain: "
                  + ("scale_out_gb_s" if bw else "roofline.yaml inter_node_gb_s (no scale_out_gb_s recorded)")
                  + ("" if lat is not None else ", latency roofline.yaml collective + inter_node latency"))


def kv_transfer_bytes_per_gpu(dep: Deployment, tokens: float) -> float:
    """KV bytes of `tokens` prompt tokens that ONE GPU of the prefill replica holds and sends."""
    return dep.hp.kv_bytes_per_token(dep.quant.kv_bits / 8, tp=dep.attn_tp) * tokens


def kv_wire_s(dep: Deployment, tokens: float, link: KvLink) -> float:
    """Seconds a prompt's KV occupies the link: bytes one GPU sends / GB/s (what queues on a busy link)."""
    return kv_transfer_bytes_per_gpu(dep, tokens) / (link.gb_s * BYTES_PER_GB)


def kv_transfer_s(dep: Deployment, tokens: float, link: KvLink) -> float:
    """Seconds to move a prompt's KV from prefill replica `dep` over `link`: bytes / GB/s + latency."""
    return kv_wire_s(dep, tokens, link) + us_to_s(link.latency_us)


# --- a pool layout --------------------------------------------------------------------------------------


def parse_pools(text: str) -> tuple[int, int]:
    """'2P1D' -> (2, 1): prefill replicas, decode replicas."""
    m = re.fullmatch(r"\s*(\d+)\s*[Pp]\s*(\d+)\s*[Dd]\s*", text or "")
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserInputError(f"--pools: expected xPyD with x, y >= 1, e.g. 1P1D or 2P1D (got {text!r})")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class DisaggSetup:
    """Both pools configured for simulation, and the link between them."""

    prefill: Any  # bench.planner.simulate.SimSetup
    decode: Any
    link: KvLink

    @property
    def gpus(self) -> int:
        return self.prefill.replicas * self.prefill.dep.tp + self.decode.replicas * self.decode.dep.tp

    @property
    def label(self) -> str:
        p, d = self.prefill, self.decode

        def par(dep: Deployment) -> str:
            return f"TP{dep.tp}{' EP' if dep.ep else ''}{f' DP{dep.dp_attention}' if dep.dp_attention > 1 else ''}"

        return f"{p.replicas}P{d.replicas}D (P: {par(p.dep)}; D: {par(d.dep)})"


def check_scale_up(dep: Deployment, flag: str) -> None:
    """A replica's TP group must sit in one scale-up domain (its all-reduces run every layer)."""
    if dep.attn_tp > dep.scale_up_gpus:
        raise UserInputError(f"{flag}: TP {dep.attn_tp} is larger than {dep.gpu.id}'s scale-up domain of "
                             f"{dep.scale_up_gpus} GPUs (scale_up_gpus); allowed: at most {dep.scale_up_gpus}")


def disagg_setup(prefill: Deployment, x: int, decode: Deployment, y: int, *, max_model_len: int,
                 max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                 prefix_caching: bool = False, router: str = "least_loaded",
                 link: KvLink | None = None) -> DisaggSetup:
    """x prefill replicas of `prefill`, y decode replicas of `decode`, configured as vLLM would be."""
    from bench.planner import simulate as sim

    if x < 1 or y < 1:
        raise UserInputError(f"--pools: at least one prefill and one decode replica (got {x}P{y}D)")
    check_scale_up(prefill, "--prefill-tp")
    check_scale_up(decode, "--decode-tp")
    ps = sim.setup(prefill, x, max_num_seqs=max_num_seqs or sim.vllm_default_max_num_seqs(prefill.gpu, prefill.tp),
                   max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
                   prefix_caching=prefix_caching, router=router, where="plan (prefill pool)")
    ds = sim.setup(decode, y, max_num_seqs=max_num_seqs or sim.vllm_default_max_num_seqs(decode.gpu, decode.tp),
                   max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
                   prefix_caching=True, router=router, where="plan (decode pool)")
    gpus = x * prefill.tp + y * decode.tp
    return DisaggSetup(ps, ds, link or kv_link(prefill.gpu, prefill.eff, gpus))


def pool_cluster(s: DisaggSetup) -> PoolCluster:
    """The engines of both pools in one event queue, the prefill pool first."""
    from bench.planner import simulate as sim

    pre = sim.engines(s.prefill)
    dec = sim.engines(s.decode, first_index=len(pre))
    dep, link = s.prefill.dep, s.link

    def wire_s(req: SimRequest) -> float:
        return kv_wire_s(dep, req.prompt_len, link)

    return PoolCluster(pre, dec, wire_s, latency_s=us_to_s(link.latency_us), router=s.prefill.router)


def simulate_disagg_point(s: DisaggSetup, isl: int, osl: int, concurrency: int, *, cached_share: float = 0.0,
                          seed: int = 0) -> tuple[CurvePoint, dict[str, Any]]:
    """One closed-loop point of the xPyD deployment (the harness's protocol, as an aggregated plan point)."""
    from bench.planner import simulate as sim

    c = pool_cluster(s)
    row = sim.simulate_curve_point(s.decode, isl, osl, concurrency, cached_share=cached_share, seed=seed,
                                   engines=c, gpu_count=s.gpus)
    steps = sum(e.step for e in c.decode)
    batch = sum(e.tokens_out for e in c.decode) / max(steps, 1) * s.decode.dep.dp_attention
    tpot = row.get("tpot_ms_p50") or math.nan
    point = CurvePoint(
        concurrency=concurrency, batch_per_replica=batch, tpot_ms=tpot, ttft_ms=row["ttft_ms_p50"],
        e2el_ms=row["e2el_ms_p50"], interactivity_tok_s_user=row["interactivity_tok_s_user"] or math.nan,
        output_tok_s=row["output_tok_s"], output_tok_s_per_gpu=row["output_tok_s_per_gpu"],  # summarize's own
        total_tok_s_per_gpu=row["total_tok_s_per_gpu"], decode_bound="-",
        queued=c.kv_waits > 0 or row["sim_preemptions"] > 0, ttft_ms_p90=row["ttft_ms_p90"],
        ttft_ms_p99=row["ttft_ms_p99"], tpot_ms_p90=row.get("tpot_ms_p90"), tpot_ms_p99=row.get("tpot_ms_p99"),
        e2el_ms_p90=row["e2el_ms_p90"], itl_ms_p90=row.get("itl_ms_p90"), preemptions=int(row["sim_preemptions"]),
        method="simulate",
        latency_ms={k: float(v) for k, v in row.items() if k.startswith(("ttft_ms_", "tpot_ms_", "itl_ms_", "e2el_ms_"))
                    and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))})
    stats = {"kv_waits": c.kv_waits, "transfers": c.transfers,
             "mean_transfer_ms": (c.transfer_busy_s / max(c.transfers, 1) + us_to_s(s.link.latency_us)) * MS_PER_S,
             "stopped": row.get("sim_stopped")}
    return point, stats


# --- the search ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisaggQuestion:
    """What `plan --disagg` searches: the pools' base deployment (model, GPU, quantization, factors; its tp
    is ignored), the GPUs of the whole xPyD deployment and the optional fixed choices."""

    base: Deployment
    gpus: int
    isl: int
    osl: int
    concurrencies: tuple[int, ...]
    slo: dict[str, float]
    pools: tuple[int, int] | None = None
    prefill_tp: int | None = None
    decode_tp: int | None = None
    decode_dp_attention: int = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


def _fits(dep: Deployment, tokens: int) -> bool:
    fit = memory_fit(dep, tokens)
    return fit.fits and fit.kv_capacity_tokens >= tokens


def _sizes(q: DisaggQuestion, fixed: int | None, flag: str, tokens: int, decode: bool) -> list[Deployment]:
    """Replica deployments one pool may use: the fixed size, else the smallest SIZES_PER_POOL that fit."""
    b = q.base
    if fixed is not None:
        if fixed < 1 or fixed > q.gpus:
            raise UserInputError(f"{flag}: must be between 1 and --disagg-gpus {q.gpus} (got {fixed})")
        cands = [fixed]
    else:
        cands = [s for s in REPLICA_SIZES if s <= min(q.gpus - 1, b.scale_up_gpus)]
    out: list[Deployment] = []
    for s in cands:
        if len({d.tp for d in out}) >= SIZES_PER_POOL:
            break
        dp = math.gcd(q.decode_dp_attention, s)
        # decode: --dp-attention; prefill: plain TP, and DP attention too when asked for (MLA/DSA prefill runs
        # its replicated indexer and down-projections once per group: bench.planner.rank_work)
        dps = [dp] if decode else sorted({1, dp})
        deps = [replace(b, tp=s, dp_attention=d) for d in dps]
        check_scale_up(deps[0], flag)
        if _fits(deps[0], tokens):
            out += deps
        elif fixed is not None:
            fit = memory_fit(deps[0], tokens)
            raise UserInputError(f"{flag}: the model does not fit in {s} x {b.gpu.id} "
                                 f"({fit.weights_gib_per_gpu:.1f} GiB of weights per GPU of "
                                 f"{fit.usable_gib_per_gpu:.1f} usable); allowed: a larger TP")
    return out


def layouts(q: DisaggQuestion) -> list[tuple[Deployment, int, Deployment, int]]:
    """Every (prefill replica, x, decode replica, y) to try: x * P + y * D <= GPUs and no further replica of
    either size fits in what is left; a fixed --pools must use the GPUs exactly."""
    model_len = q.isl + q.osl
    pre = _sizes(q, q.prefill_tp, "--prefill-tp", q.isl + 1, decode=False)
    dec = _sizes(q, q.decode_tp, "--decode-tp", model_len, decode=True)
    if not pre or not dec:
        raise UserInputError(f"--disagg-gpus: the model does not fit in any replica of at most "
                             f"{min(q.gpus - 1, q.base.scale_up_gpus)} x {q.base.gpu.id} (one scale-up domain, "
                             "leaving one GPU for the other pool); allowed: more GPUs, a smaller quantization")
    out = []
    if q.pools is not None:
        x, y = q.pools
        if q.prefill_tp is None and q.decode_tp is None:
            if q.gpus % (x + y):
                raise UserInputError(f"--pools: {x}P{y}D does not divide --disagg-gpus {q.gpus} into {x + y} equal "
                                     "replicas; allowed: a layout whose x + y divides the GPUs, or give --prefill-tp "
                                     "and --decode-tp")
            size = q.gpus // (x + y)
            dp = math.gcd(q.decode_dp_attention, size)
            pre = [replace(q.base, tp=size, dp_attention=d) for d in sorted({1, dp})]
            dec = [replace(q.base, tp=size, dp_attention=dp)]
            check_scale_up(pre[0], "--pools")
        for p in pre:
            for d in dec:
                if x * p.tp + y * d.tp != q.gpus:
                    raise UserInputError(f"--pools: {x}P{y}D x (prefill TP {p.tp}, decode TP {d.tp}) uses "
                                         f"{x * p.tp + y * d.tp} GPUs, not --disagg-gpus {q.gpus}; allowed: "
                                         "x * prefill TP + y * decode TP = --disagg-gpus")
                out.append((p, x, d, y))
        return out
    for p in pre:
        for d in dec:
            for x in range(1, q.gpus // p.tp + 1):
                for y in range(1, (q.gpus - x * p.tp) // d.tp + 1):
                    left = q.gpus - x * p.tp - y * d.tp
                    if left < min(p.tp, d.tp):
                        out.append((p, x, d, y))
    if not out:
        raise UserInputError(f"--disagg-gpus: {q.gpus} GPUs hold no prefill and decode replica of the sizes that fit")
    return out


def search(q: DisaggQuestion) -> list[dict[str, Any]]:
    """Simulate every layout over the concurrencies; one entry per layout with its curve and best point."""
    out = []
    for p, x, d, y in layouts(q):
        s = disagg_setup(p, x, d, y, max_model_len=q.isl + q.osl, max_num_seqs=q.max_num_seqs,
                         max_num_batched_tokens=q.max_num_batched_tokens)
        curve = []
        for c in sorted(set(q.concurrencies)):
            point, stats = simulate_disagg_point(s, q.isl, q.osl, c)
            curve.append({**asdict(point), "meets_slo": meets_slo(point, q.slo), **stats})
        ok = [r for r in curve if r["meets_slo"]]
        best = max(ok, key=lambda r: r["output_tok_s_per_gpu"]) if ok else None
        out.append({"layout": s.label, "prefill_replicas": x, "prefill_tp": p.tp, "decode_replicas": y,
                    "decode_tp": d.tp, "decode_dp_attention": d.dp_attention, "prefill_dp_attention": p.dp_attention,
                    "gpus": s.gpus,
                    "link": asdict(s.link),
                    "kv_transfer_ms_isl": kv_transfer_s(p, q.isl, s.link) * MS_PER_S,
                    "decode_kv_blocks": s.decode.engine.num_blocks, "curve": curve, "best": best})
    return out


def best_layout(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The layout whose best point under the SLO has the most output tok/s per GPU."""
    ok = [r for r in results if r["best"] is not None]
    return max(ok, key=lambda r: r["best"]["output_tok_s_per_gpu"]) if ok else None


# --- the answer `plan --disagg` prints -----------------------------------------------------------------


def base_deployment(model: str, gpu: str, quant: str, *, ep: bool = False, kv_bits: float | None = None) -> Deployment:
    """The pools' common deployment (tp 1; the search sets each pool's), resolved as bench.planner.estimate
    resolves an aggregated one: catalog hyperparameters, GPU peaks, quantization preset, engine factors."""
    from bench.planner.estimate import resolve_model
    from bench.planner.factors import efficiency_for, get_gpu, load_roofline_config, resolve_quant

    cfg = load_roofline_config()
    _, hp = resolve_model(model)
    peaks = get_gpu(gpu)
    q = resolve_quant(quant, kv_bits, cfg)
    eff, _ = efficiency_for(peaks.id, q.name, cfg, hbm_gb_s=peaks.hbm_gb_s)
    return Deployment(hp=hp, gpu=peaks, quant=q, tp=1, ep=ep, eff=eff)


def _priced(point: dict[str, Any] | None, est: dict[str, Any], rate: float | None, price: Any, mix: Any,
            usd_per_cny: float | None) -> dict[str, Any]:
    """$/M output and margin of one best point, through the estimate's own money path (one Offer a point)."""
    from bench.planner.estimate import _money

    if point is None:
        return {"usd_per_m_output_tokens": None, "gross_margin": None, "utilization": est["utilization"]}
    return _money(point["output_tok_s_per_gpu"], point["total_tok_s_per_gpu"], rate, price, mix, usd_per_cny,
                  est["utilization"])


def _row(mode: str, config: str, gpus: int, best: dict[str, Any] | None, money: dict[str, Any]) -> dict[str, Any]:
    keys = ("concurrency", "ttft_ms_p90", "tpot_ms_p90", "interactivity_tok_s_user", "output_tok_s_per_gpu")
    return {"mode": mode, "config": config, "gpus": gpus,
            **{k: (best or {}).get(k) for k in keys}, **money, "source": "estimate"}


def plan_disagg(est: dict[str, Any], q: DisaggQuestion, *, price: Any = None,
                usd_per_cny: float | None = None) -> dict[str, Any]:
    """The best xPyD layout under the SLO next to the aggregated estimate `est` (bench.planner.estimate
    .plan_estimate's answer for the same model, GPU and quantization), each priced at the estimate's rate
    and utilization."""
    from bench.econ.margin import TrafficMix

    results = search(q)
    top = best_layout(results)
    mix = TrafficMix(float(q.isl), float(q.osl), 0.0)
    rate = est["usd_per_gpu_hour"]
    agg_best = est["best_under_slo"]
    agg_cfg = (f"TP{est['tp']}{' EP' if est['ep'] else ''}"
               f"{' DP' + str(est['dp_attention']) if est.get('dp_attention', 1) > 1 else ''} x{est['replicas']}")
    comparison = [
        _row("aggregated", agg_cfg, est["count"], agg_best, _priced(agg_best, est, rate, price, mix, usd_per_cny)),
        _row("disaggregated", top["layout"] if top else "none meets the SLO", q.gpus, top["best"] if top else None,
             _priced(top["best"] if top else None, est, rate, price, mix, usd_per_cny)),
    ]
    for r in results:
        r.update(_priced(r["best"], est, rate, price, mix, usd_per_cny))
    return {"gpus": q.gpus, "gpu": est["gpu"], "model": est["model"], "quant": est["quant"], "slo": q.slo,
            "tier": est["tier"], "usd_per_gpu_hour": rate, "utilization": est["utilization"],
            "layouts": results, "best": top, "comparison": comparison,
            "notes": [f"KV link: {top['link']['kind']}, {top['link']['gb_s']:g} GB/s per GPU, "
                      f"{top['link']['latency_us']:g} us ({top['link']['source']})"
                      if top else "no layout meets the SLO",
                      "KV transfer: each GPU of a prefill replica sends its share of the prompt's KV over its own "
                      "link, one prompt at a time per prefill engine; a prefilled request waits for decode KV room",
                      "TTFT ends with the decode engine's first step (the proxy streams from the decode server)"]}


def compare_disagg(est: dict[str, Any], q: DisaggQuestion, gpus: tuple[str, ...], *, price: Any = None,
                   usd_per_cny: float | None = None) -> list[dict[str, Any]]:
    """`--compare --disagg`: per GPU, the best aggregated point (the estimate's compare rows, this quantization)
    and the best xPyD layout on the same number of GPUs, priced alike."""
    from bench.econ.margin import TrafficMix

    mix = TrafficMix(float(q.isl), float(q.osl), 0.0)
    rows = []
    for g in gpus:
        agg = next((r for r in est.get("compare", []) if r["gpu"] == g and r["quant"] == est["quant"]), None)
        if agg is not None:
            rows.append({"gpu": g, "mode": "aggregated", "config": f"TP{est['tp']} x{est['replicas']}",
                         "gpus": agg["count"], "output_tok_s_per_gpu": agg["output_tok_s_per_gpu"],
                         "usd_per_m_output_tokens": agg["usd_per_m_output_tokens"],
                         "gross_margin": agg.get("gross_margin"), "tier": agg["tier"], "source": "estimate"})
        try:
            base = base_deployment(est["model"], g, est["quant"], ep=q.base.ep, kv_bits=q.base.quant.kv_bits)
            top = best_layout(search(replace(q, base=base)))
        except UserInputError as e:
            rows.append({"gpu": g, "mode": "disaggregated", "config": f"not possible: {e}", "gpus": q.gpus,
                         "source": "estimate"})
            continue
        rate = agg["usd_per_gpu_hour"] if agg is not None else None
        money = _priced(top["best"] if top else None, est, rate, price, mix, usd_per_cny)
        rows.append({"gpu": g, "mode": "disaggregated", "config": top["layout"] if top else "none meets the SLO",
                     "gpus": q.gpus, "output_tok_s_per_gpu": top["best"]["output_tok_s_per_gpu"] if top else None,
                     "usd_per_m_output_tokens": money.get("usd_per_m_output_tokens"),
                     "gross_margin": money.get("gross_margin"), "tier": agg["tier"] if agg else None,
                     "source": "estimate"})
    return rows
