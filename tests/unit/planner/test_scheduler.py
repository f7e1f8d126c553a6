"""The scheduler simulation (bench.planner.scheduler) on cases small enough to work out by hand, with a
constant or linear step time so the timeline is arithmetic, plus Little's law on a closed loop."""

from __future__ import annotations

import pytest

from bench.config.load_spec import LoadPoint
from bench.measure.metrics import summarize
from bench.planner import scheduler as sched
from bench.planner.cluster import Cluster
from bench.planner.scheduler import EngineConfig, EngineSim, SimRequest
from bench.planner.simulate import StepJitter, fixed_requests
from bench.planner.traffic import SimClient

STEP = 0.010  # seconds per step in the hand-computed cases


def const_step(*_: object) -> float:
    return STEP


def run(cfg: EngineConfig, sends: list[tuple[float, SimRequest]], timer=const_step) -> tuple[EngineSim, dict]:
    e = EngineSim(cfg, timer)
    cl = Cluster([e])
    done: dict = {}
    cl.on_done = lambda r, t: done.__setitem__(r.tag, (t, r))
    for at, r in sends:
        cl.send(r, at)
    cl.run(lambda: False)
    return e, done


def test_chunked_prefill_timeline_by_hand():
    """Budget 64, two prompts of 100 tokens, 5 output tokens, 10 ms steps, synchronous scheduling.
    step 0: a 64 | step 1: a 36 (first token), b 28 | step 2: a decodes, b 63 | step 3: a decodes, b 9
    (first token) | a's 5th token at step 5, b's at step 7."""
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, num_blocks=1000, async_scheduling=False)
    _, done = run(cfg, [(0.0, SimRequest(100, 5, tag="a")), (0.0, SimRequest(100, 5, tag="b"))])
    (ta, a), (tb, b) = done["a"], done["b"]
    assert a.first_token_s == pytest.approx(0.020) and ta == pytest.approx(0.060)
    assert b.first_token_s == pytest.approx(0.040) and tb == pytest.approx(0.080)
    assert a.token_steps == [(1, 5)] and b.token_steps == [(3, 7)]


@pytest.mark.parametrize("async_sched, first_token_s", [(False, 0.020), (True, 0.030)])
def test_async_scheduling_sees_an_arrival_one_step_later(async_sched, first_token_s):
    """A long decode keeps the engine busy; b arrives at 5 ms, inside step 0. Synchronous: step 1 (10-20 ms)
    prefills it. Async: step 1 was scheduled when step 0 started (0 ms), so b waits for step 2 (20-30 ms)."""
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=async_sched)
    _, done = run(cfg, [(0.0, SimRequest(8, 50, tag="a")), (0.005, SimRequest(8, 2, tag="b"))])
    assert done["b"][1].first_token_s == pytest.approx(first_token_s)


def test_max_num_seqs_queues_the_third_request():
    """max_num_seqs 2: c waits for a or b to finish (step 3 ends at 40 ms), is prefilled in step 4."""
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=False)
    sends = [(0.0, SimRequest(8, 4, tag=t)) for t in "abc"]
    _, done = run(cfg, sends)
    assert done["a"][0] == pytest.approx(0.040) and done["b"][0] == pytest.approx(0.040)
    assert done["c"][1].first_token_s == pytest.approx(0.050)
    assert done["c"][0] == pytest.approx(0.080)


def test_prefix_cache_hit_skips_the_cached_blocks():
    """b shares a's 4 full blocks (64 tokens of a 65-token prompt) and arrives after a ended: it prefills
    one token, and the step model is asked for a chunk of 1 token after an offset of 64."""
    seen: list[list[tuple[float, float]]] = []

    def timer(n_dec: int, ctx: float, chunks: list[tuple[float, float]]) -> float:
        if chunks:
            seen.append(chunks)
        return STEP

    hashes = (11, 12, 13, 14)
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, num_blocks=1000, block_size=16,
                       prefix_caching=True, async_scheduling=False)
    e, done = run(cfg, [(0.0, SimRequest(65, 2, hashes=hashes, tag="a")),
                        (1.0, SimRequest(65, 2, hashes=hashes, tag="b"))], timer)
    assert done["b"][1].cached_tokens == 64 and done["a"][1].cached_tokens == 0
    assert seen == [[(0.0, 65.0)], [(64.0, 1.0)]]
    assert e.prefix_hit_tokens == 64 and e.prompt_tokens == 130


def test_preemption_recomputes_the_newest_and_every_token_arrives():
    """A pool of 12 blocks of 16 tokens (192 tokens) cannot hold two sequences of 64 + 64 tokens: the newer
    request (b) is preempted, recomputes its prompt plus what it generated, and still gets all 64 tokens."""
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=512, num_blocks=12, block_size=16,
                       async_scheduling=False)
    e, done = run(cfg, [(0.0, SimRequest(64, 64, tag="a")), (0.0, SimRequest(64, 64, tag="b"))])
    a, b = done["a"][1], done["b"][1]
    assert e.preemptions >= 1 and b.preemptions >= 1 and a.preemptions == 0
    for r in (a, b):
        assert sum(y - x + 1 for x, y in r.token_steps) == r.output_len
    assert done["a"][0] < done["b"][0]
    assert e.private_blocks == 0 and e.n_dec == 0


@pytest.mark.parametrize("jitter_cv", [0.0, 0.3])
def test_macro_steps_change_nothing(monkeypatch, jitter_cv):
    """Decode-only stretches run as one macro step; with them switched off every time is the same (with step
    jitter too: a macro step consumes the multipliers of the steps it keeps, in order)."""

    def timer(n_dec: int, ctx: float, chunks: list[tuple[float, float]]) -> float:
        return 0.010 + 0.0001 * n_dec + 0.00001 * sum(n for _, n in chunks)

    def closed_loop() -> list[tuple]:
        cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=512, num_blocks=200, block_size=16)
        e = EngineSim(cfg, timer, jitter=StepJitter(jitter_cv, seed=0) if jitter_cv else None)
        cl = Cluster([e])
        out: list[tuple] = []
        left = [40]

        def on_done(r: SimRequest, t: float) -> None:
            out.append((r.tag, round(t, 9), r.preemptions))
            if left[0]:
                left[0] -= 1
                cl.send(SimRequest(300, 200, tag=left[0]), t)

        cl.on_done = on_done
        for i in range(12):
            cl.send(SimRequest(300, 200, tag=-i), 0.0)
        cl.run(lambda: False)
        return out

    with_spans = closed_loop()
    monkeypatch.setattr(sched.EngineSim, "_span", lambda self, *a: None)
    assert closed_loop() == with_spans
    assert any(p for _, _, p in with_spans)  # the case does exercise preemption


def test_littles_law_on_a_closed_loop():
    """C = 4 clients, max_num_seqs 2, every request one step of prefill (first token) + 3 decode steps of
    10 ms: 2 requests per 40 ms = 50 req/s, and by Little's law each spends C / X = 80 ms from send to
    last token, 50 ms of it before its first token."""
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=False)
    cl = Cluster([EngineSim(cfg, const_step)])
    lp = LoadPoint(concurrency=4, num_requests=200, warmup_requests=8, cooldown=True)
    out = SimClient(cl, lp, lambda spec: SimRequest(spec.input_len, spec.output_len)).run(
        fixed_requests(8, 4), fixed_requests(8, 4), fixed_requests(8, 4))
    row = summarize(out.load.records)
    assert row["completed"] == 200
    assert row["request_throughput"] == pytest.approx(50.0, rel=0.02)
    assert row["e2el_ms_mean"] == pytest.approx(80.0, rel=0.02)
    assert row["ttft_ms_mean"] == pytest.approx(50.0, rel=0.03)
    assert row["tpot_ms_p50"] == pytest.approx(10.0)


def test_open_loop_sends_at_the_load_generators_times():
    """Poisson arrivals: the n-th send is at the sum of n unit-mean gamma(1) gaps / rate, drawn from
    random.Random(seed) as bench.measure.loadgen draws them."""
    import random

    rate, seed = 20.0, 7
    rng = random.Random(seed)
    u, expected = 0.0, []
    for _ in range(12):
        u += rng.gammavariate(1.0, 1.0)
        expected.append(u / rate)
    cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=512, num_blocks=1000)
    lp = LoadPoint(request_rate=rate, num_requests=10, warmup_requests=2, cooldown=False)
    out = SimClient(Cluster([EngineSim(cfg, const_step)]), lp, lambda s: SimRequest(s.input_len, s.output_len),
                    seed=seed).run(fixed_requests(8, 2), fixed_requests(8, 2), None)
    sends = sorted(r.send_ns / 1e9 for r in out.load.records)
    assert sends == pytest.approx(expected, abs=1e-9)


def test_an_unservable_rate_stops_at_the_queue_bound():
    """10,000 req/s into an engine that serves ~50/s: the simulation stops when more than 50 requests
    wait, and says the deployment is saturated."""
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=64, num_blocks=1000)
    lp = LoadPoint(request_rate=10_000.0, num_requests=5000, warmup_requests=0)
    out = SimClient(Cluster([EngineSim(cfg, const_step)]), lp, lambda s: SimRequest(s.input_len, s.output_len),
                    max_waiting=50).run(fixed_requests(8, 4), fixed_requests(8, 4), fixed_requests(8, 4))
    assert out.stopped is not None and "saturated" in out.stopped
    assert any(r.cancelled for r in out.load.records)


def test_least_loaded_router_balances_two_replicas():
    cfg = EngineConfig(max_num_seqs=8, max_num_batched_tokens=256, num_blocks=1000)
    engines = [EngineSim(cfg, const_step, i) for i in range(2)]
    cl = Cluster(engines, router="least_loaded")
    for i in range(6):
        cl.send(SimRequest(8, 3, tag=i), 0.0)
    cl.run(lambda: False)
    assert [e.prompt_tokens for e in engines] == [24, 24]


def test_prefill_chunks_are_priced_by_their_own_attention():
    """Causal attention is additive over a prompt's chunks: a 2048-token prompt prefilled as 1024 + 1024 (the
    second chunk attending to the first) costs exactly one 2048-token chunk; two different 1024-token prompts
    in one step cost less (no cross-prompt attention), and more than half as much."""
    from bench.config.catalog import get_model
    from bench.planner.deployment import Deployment
    from bench.planner.factors import get_gpu, resolve_quant

    dep = Deployment(hp=get_model("glm-4.6").hp, gpu=get_gpu("h200"), quant=resolve_quant("bf16"), tp=8)
    whole = dep.step_raw(0, 0.0, chunks=[(0.0, 2048.0)]).compute_s
    split = dep.step_raw(0, 0.0, chunks=[(0.0, 1024.0), (1024.0, 1024.0)]).compute_s
    two_prompts = dep.step_raw(0, 0.0, chunks=[(0.0, 1024.0), (0.0, 1024.0)]).compute_s
    assert split == pytest.approx(whole, rel=1e-12)
    assert whole / 2 < two_prompts < whole
    assert dep.step_raw(0, 0.0, n_pre=2048.0).compute_s == pytest.approx(whole, rel=1e-12)
