"""Disaggregated prefill / decode (bench.planner.disagg, bench.planner.cluster.PoolCluster): the KV transfer
time by hand, the link choice, a 1P1D deployment against the aggregated one, hand-timed transfers, the decode
pool's KV exhaustion, and the bad pool layouts `plan --disagg` refuses with one line, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.catalog import get_model
from bench.errors import UserInputError
from bench.planner import disagg as dg
from bench.planner import simulate as sim
from bench.planner.cluster import PoolCluster
from bench.planner.roofline import Deployment, Efficiency, GpuPeaks, QuantSpec
from bench.planner.scheduler import EngineConfig, EngineSim, SimRequest

BF16 = QuantSpec(name="bf16", weight_bits=16, kv_bits=16, compute="bf16")
# B200 datasheet peaks (shared/reference/gpus.md) with NVLink 5 quoted as 1.8 TB/s (the brief's figure)
B200_1800 = GpuPeaks(id="b200-test", memory_gb=180, hbm_gb_s=7700, tflops_bf16=2250, tflops_fp8=4500,
                     interconnect_gb_s=1800)
EFF_5US = Efficiency(collective_latency_us=5.0, inter_node_latency_us=20.0, inter_node_gb_s=50.0)


def glm45(tp: int = 1, kv_bits: float = 16, gpu: GpuPeaks = B200_1800) -> Deployment:
    return Deployment(hp=get_model("glm-4.5").hp, gpu=gpu, quant=BF16.model_copy(update={"kv_bits": kv_bits}),
                      tp=tp, eff=EFF_5US)


def test_kv_transfer_time_glm45_by_hand():
    """GLM-4.5 BF16 KV: 92 layers x 2 (K, V) x 8 KV heads x 128 x 2 B = 376,832 B per token (its README:
    368 KiB). 8192 tokens = 3,087,007,744 B over 1800 GB/s = 1.715004 ms, + 5 us latency = 1.720004 ms."""
    link = dg.kv_link(B200_1800, EFF_5US, gpus=2)
    assert (link.kind, link.gb_s, link.latency_us) == ("scale-up", 1800.0, 5.0)
    assert dg.kv_transfer_bytes_per_gpu(glm45(), 8192) == 3_087_007_744
    assert dg.kv_transfer_s(glm45(), 8192, link) == pytest.approx(1.720004302e-3, rel=1e-9)
    # an FP8 KV cache halves the bytes: 0.857502 ms + 5 us
    assert dg.kv_transfer_s(glm45(kv_bits=8), 8192, link) == pytest.approx(0.862502151e-3, rel=1e-9)
    # TP8 prefill: each GPU holds 1 of the 8 KV heads and sends it over its own link in parallel
    assert dg.kv_transfer_s(glm45(tp=8), 8192, link) == pytest.approx(1.715004302e-3 / 8 + 5e-6, rel=1e-9)


def test_link_is_nvlink_inside_the_scale_up_domain_else_scale_out():
    h200 = GpuPeaks(id="h200-test", memory_gb=141, hbm_gb_s=4800, tflops_bf16=989, interconnect_gb_s=450)
    assert dg.kv_link(h200, EFF_5US, 8).kind == "scale-up"
    out = dg.kv_link(h200, EFF_5US, 16)  # two 8-GPU boards, no scale_out_gb_s: roofline.yaml's NIC figure
    assert (out.kind, out.gb_s, out.latency_us) == ("scale-out", 50.0, 25.0)
    nic = h200.model_copy(update={"scale_out_gb_s": 100.0})
    assert dg.kv_link(nic, EFF_5US, 16).gb_s == 100.0
    rack = h200.model_copy(update={"scale_up_gpus": 72})
    assert dg.kv_link(rack, EFF_5US, 64).kind == "scale-up"
    bare = h200.model_copy(update={"interconnect_gb_s": None})
    with pytest.raises(UserInputError, match="interconnect_gb_s"):
        dg.kv_link(bare, EFF_5US, 8)


def test_pools_parse():
    assert dg.parse_pools("2P1D") == (2, 1)
    for bad in ("2P", "0P1D", "P1D", "1D2P", ""):
        with pytest.raises(UserInputError, match="--pools"):
            dg.parse_pools(bad)


# --- hand-timed pools ---------------------------------------------------------------------------------

STEP = 0.010


def _pools(decode_blocks: int, transfer_s: float, n_decode: int = 1) -> PoolCluster:
    step = lambda *_: STEP  # noqa: E731 - a constant step makes the timeline arithmetic
    pre = EngineSim(EngineConfig(max_num_seqs=8, max_num_batched_tokens=4096, num_blocks=10_000,
                                 async_scheduling=False), step, 0)
    dec = [EngineSim(EngineConfig(max_num_seqs=8, max_num_batched_tokens=4096, num_blocks=decode_blocks,
                                  prefix_caching=True, async_scheduling=False), step, 1 + i)
           for i in range(n_decode)]
    return PoolCluster([pre], dec, lambda r: transfer_s)


def _run(c: PoolCluster, reqs: list[SimRequest]) -> dict:
    done: dict = {}
    c.on_done = lambda r, t: done.__setitem__(r.tag, (t, r))
    for r in reqs:
        c.send(r, 0.0)
    c.run(lambda: False)
    return done


def test_transfer_and_decode_timeline_by_hand():
    """10 ms steps, 0.5 s transfers, one prefill engine. Both 100-token prompts prefill in step [0, 10 ms] and
    finish there (max_tokens 1). Their transfers queue on the one link: A lands at 0.51 s, B at 1.01 s. On the
    decode engine A is a prefix hit of 96 tokens (6 full blocks of 16; the last block is computed): first
    token at 0.52 s, tokens 2 and 3 at 0.53 and 0.54 s. B: first token at 1.02 s, done at 1.04 s."""
    c = _pools(decode_blocks=1000, transfer_s=0.5)
    done = _run(c, [SimRequest(100, 3, tag="a"), SimRequest(100, 3, tag="b")])
    (ta, a), (tb, b) = done["a"], done["b"]
    assert a.first_token_s == pytest.approx(0.52) and ta == pytest.approx(0.54)
    assert b.first_token_s == pytest.approx(1.02) and tb == pytest.approx(1.04)
    assert a.cached_tokens == 96 and a.engine == 1  # the decode engine, which the records read
    assert c.transfers == 2 and c.kv_waits == 0


def test_decode_pool_kv_exhaustion_queues():
    """A decode engine of 100 blocks (1,600 tokens) holds two 640-token prompts (40 blocks each, 44 with their
    50 output tokens); the third prompt's 40 blocks do not fit beside them, so it waits, prefilled, until the
    first finishes; with room for all three it does not."""
    reqs = lambda: [SimRequest(640, 50, tag=i) for i in range(3)]  # noqa: E731
    tight = _pools(decode_blocks=100, transfer_s=0.0)
    done = _run(tight, reqs())
    assert tight.kv_waits == 1
    first_done = min(t for t, _ in done.values())
    assert done[2][1].first_token_s > first_done
    roomy = _pools(decode_blocks=1000, transfer_s=0.0)
    done2 = _run(roomy, reqs())
    assert roomy.kv_waits == 0 and done2[2][1].first_token_s < first_done


def test_pool_cluster_needs_prefix_caching_on_decode():
    step = lambda *_: STEP  # noqa: E731
    cfg = EngineConfig(max_num_seqs=8, max_num_batched_tokens=4096, num_blocks=100)
    with pytest.raises(ValueError, match="prefix_caching"):
        PoolCluster([EngineSim(cfg, step, 0)], [EngineSim(cfg, step, 1)], lambda r: 0.0)


# --- 1P1D against aggregated --------------------------------------------------------------------------


def test_1p1d_with_a_free_link_reproduces_aggregated_ttft_within_the_prefill():
    """Concurrency 1, a link of 10^9 GB/s and no latency: the disaggregated TTFT is the aggregated one (the
    same prefill step) plus the decode engine's first step (the rest of the last KV block: 1000 - 992 = 8
    tokens attending to 992 cached ones: one weight-streaming step), within the prefill's own time; TPOT is
    the same."""
    dep = Deployment(hp=get_model("glm-4.5").hp, gpu=B200_1800, quant=BF16, tp=8, eff=EFF_5US)
    isl, osl = 1000, 64
    agg = sim.setup(dep, 1, max_num_seqs=64, max_model_len=isl + osl)
    a = sim.simulate_curve_point(agg, isl, osl, 1)
    free = dg.KvLink("scale-up", 1e9, 0.0, "test")
    dis = dg.disagg_setup(dep, 1, dep, 1, max_model_len=isl + osl, max_num_seqs=64, link=free)
    point, stats = dg.simulate_disagg_point(dis, isl, osl, 1)
    timer = sim.StepTimer(dep)
    prefill_s, decode_first_s = timer(0, 0.0, [(0.0, isl)]), timer(0, 0.0, [(992.0, 8.0)])
    diff_ms = point.ttft_ms - a["ttft_ms_p50"]
    assert diff_ms == pytest.approx(decode_first_s * 1e3, rel=0.02)
    assert 0 < diff_ms < prefill_s * 1e3
    assert point.tpot_ms == pytest.approx(a["tpot_ms_p50"], rel=0.01)
    assert stats["kv_waits"] == 0 and stats["transfers"] > 0


# --- bad input: one line, exit 2, before anything is simulated -------------------------------------------

PLAN = ["plan", "--model", "glm-4.5", "--gpu", "h200", "--count", "8", "--quant", "fp8"]
BAD = [
    ([*PLAN, "--disagg", "--pools", "2P1D"], "--pools: 2P1D does not divide --disagg-gpus 16 into 3 equal replicas"),
    ([*PLAN, "--disagg", "--pools", "1P1D", "--prefill-tp", "8", "--decode-tp", "4"],
     "--pools: 1P1D x (prefill TP 8, decode TP 4) uses 12 GPUs, not --disagg-gpus 16"),
    ([*PLAN, "--disagg", "--disagg-gpus", "32", "--prefill-tp", "16"],
     "--prefill-tp: TP 16 is larger than h200's scale-up domain of 8 GPUs (scale_up_gpus)"),
    ([*PLAN, "--disagg", "--pools", "2X"], "--pools: expected xPyD"),
    ([*PLAN, "--pools", "1P1D"], "--pools: only with --disagg"),
    ([*PLAN, "--disagg", "--closed-form"], "--closed-form: not with --disagg"),
    ([*PLAN, "--disagg", "--disagg-gpus", "1"], "--disagg-gpus: at least 2"),
    ([*PLAN, "--disagg", "--prefill-tp", "1"], "--prefill-tp: the model does not fit in 1 x h200"),
]


def test_layouts_fill_the_gpus_by_hand():
    """GLM-4.5 FP8 fits 4 and 8 H200s (355 GB of weights: not 1 or 2). On 16 GPUs every x P + y D <= 16 that
    leaves no room for one more replica: 4+4: 1P3D, 2P2D, 3P1D; P4 + D8: 2P1D (1P1D leaves 4 for another
    prefill); P8 + D4: 1P2D; 8+8: 1P1D. With --dp-attention 8 the prefill pool also tries DP attention
    (gcd with its size) and the decode pool takes it."""
    base = dg.base_deployment("glm-4.5", "h200", "fp8")
    q = dg.DisaggQuestion(base=base, gpus=16, isl=8192, osl=1024, concurrencies=(1,), slo={})
    got = {(x, p.tp, y, d.tp) for p, x, d, y in dg.layouts(q)}
    assert got == {(1, 4, 3, 4), (2, 4, 2, 4), (3, 4, 1, 4), (2, 4, 1, 8), (1, 8, 2, 4), (1, 8, 1, 8)}
    q8 = dg.DisaggQuestion(base=base, gpus=16, isl=8192, osl=1024, concurrencies=(1,), slo={}, decode_dp_attention=8)
    got8 = {(x, p.tp, p.dp_attention, y, d.tp, d.dp_attention) for p, x, d, y in dg.layouts(q8)}
    assert (1, 8, 8, 1, 8, 8) in got8 and (1, 8, 1, 1, 8, 8) in got8 and (2, 4, 4, 1, 8, 8) in got8
    assert len(got8) == 12 and all(dd == dt for *_, dt, dd in got8)


@pytest.mark.parametrize("args, fragment", BAD, ids=[" ".join(c[0][8:]) for c in BAD])
def test_bad_pool_layout_is_one_line_exit_2(args, fragment):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert r.stdout.strip() == "" and "Traceback" not in r.output


def test_compare_prices_each_gpus_best_layout_and_names_what_cannot_run():
    """`--compare --disagg`: per GPU the aggregated row (from the estimate's compare rows) and the best xPyD
    layout, its $/M output at the aggregated row's rate and U: rate / U / (tok/s x 3600) x 10^6; a GPU the
    model does not fit on says so instead of a number."""
    est = {"model": "glm-4.5-air", "quant": "fp8", "tp": 1, "replicas": 1, "utilization": 0.4,
           "compare": [{"gpu": "h200", "quant": "fp8", "count": 1, "output_tok_s_per_gpu": 100.0,
                        "usd_per_m_output_tokens": 9.9, "tier": "owning-neocloud", "usd_per_gpu_hour": 1.59}]}
    q = dg.DisaggQuestion(base=dg.base_deployment("glm-4.5-air", "h200", "fp8"), gpus=2, isl=512, osl=32,
                          concurrencies=(2,), slo={})
    rows = dg.compare_disagg(est, q, ("h200", "ascend-910b"))
    assert [(r["gpu"], r["mode"]) for r in rows] == [("h200", "aggregated"), ("h200", "disaggregated"),
                                                      ("ascend-910b", "disaggregated")]
    dis = rows[1]
    assert dis["config"].startswith("1P1D (P: TP1; D: TP1)") and dis["gpus"] == 2
    assert dis["usd_per_m_output_tokens"] == pytest.approx(1.59 / 0.4 / (dis["output_tok_s_per_gpu"] * 3600) * 1e6)
    assert rows[2]["config"].startswith("not possible: ") and "does not fit" in rows[2]["config"]


def test_plan_disagg_prints_both_modes_priced_and_draws_the_figure(tmp_path):
    """End to end on a small case: the aggregated estimate and the 1P1D layout side by side, each with $/M output
    at the same rate and U (rate / U / (tok/s x 3600) x 10^6) and a margin at the price, and the figure a PNG."""
    import json

    png = tmp_path / "pd.png"
    r = CliRunner().invoke(app, ["plan", "--model", "glm-4.5-air", "--gpu", "h200", "--count", "1", "--quant", "fp8",
                                 "--isl", "512", "--osl", "32", "--concurrency", "2", "--price", "glm-4.5-air@zai",
                                 "--disagg", "--figure", str(png), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    rate, u = out["estimate"]["usd_per_gpu_hour"], out["estimate"]["utilization"]
    agg, dis = out["disagg"]["comparison"]
    assert (agg["mode"], agg["gpus"], dis["mode"], dis["gpus"]) == ("aggregated", 1, "disaggregated", 2)
    assert dis["config"] == "1P1D (P: TP1; D: TP1)" and dis["concurrency"] == 4  # 2 per GPU, as aggregated
    for row in (agg, dis):
        assert row["usd_per_m_output_tokens"] == pytest.approx(rate / u / (row["output_tok_s_per_gpu"] * 3600) * 1e6)
        assert row["gross_margin"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
