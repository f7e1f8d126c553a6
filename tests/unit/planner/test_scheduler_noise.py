"""What the simulation adds around the engine's steps: the API server's latency per request (`frontend_s`) and
the spread of step times (`step_jitter_cv`). Expected values are hand arithmetic on constant 10 ms steps, and
the lognormal's mean and coefficient of variation from its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.config.load_spec import LoadPoint
from bench.measure.metrics import summarize
from bench.planner.cluster import Cluster
from bench.planner.scheduler import EngineConfig, EngineSim, SimRequest
from bench.planner.simulate import StepJitter, fixed_requests
from bench.planner.traffic import SimClient

STEP = 0.010


def const_step(*_: object) -> float:
    return STEP


def closed_loop(cfg: EngineConfig, concurrency: int, n: int = 400, jitter_cv: float = 0.0) -> dict:
    cl = Cluster([EngineSim(cfg, const_step, jitter=StepJitter(jitter_cv, seed=0) if jitter_cv else None)])
    lp = LoadPoint(concurrency=concurrency, num_requests=n, warmup_requests=2 * concurrency, cooldown=True)
    out = SimClient(cl, lp, lambda spec: SimRequest(spec.input_len, spec.output_len)).run(
        fixed_requests(8, 4), fixed_requests(8, 4), fixed_requests(8, 4))
    return summarize(out.load.records)


def test_frontend_delays_every_request_by_hand():
    """Sent at 0 with a 5 ms frontend: the engine sees it at 5 ms, prefills it in 5-15 ms (first token at 15 ms),
    3 decode steps end at 45 ms."""
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=False,
                       frontend_s=0.005)
    cl = Cluster([EngineSim(cfg, const_step)])
    done: dict = {}
    cl.on_done = lambda r, t: done.__setitem__(r.tag, (t, r))
    cl.send(SimRequest(8, 4, tag="a"), 0.0)
    cl.run(lambda: False)
    t, r = done["a"]
    assert r.first_token_s == pytest.approx(0.015) and t == pytest.approx(0.045)


def test_frontend_lengthens_a_closed_loops_cycle():
    """One client, 4 steps of 10 ms a request and a 5 ms frontend: a request every 45 ms (22.2 req/s), TTFT
    15 ms, E2EL 45 ms; TPOT stays one step."""
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=False,
                       frontend_s=0.005)
    row = closed_loop(cfg, concurrency=1, n=100)
    assert row["request_throughput"] == pytest.approx(1 / 0.045, rel=0.02)
    assert row["ttft_ms_p50"] == pytest.approx(15.0) and row["e2el_ms_p50"] == pytest.approx(45.0)
    assert row["tpot_ms_p50"] == pytest.approx(10.0)


@pytest.mark.parametrize("cv", [0.1, 0.3])
def test_jitter_multipliers_have_mean_one_and_the_asked_spread(cv):
    """Lognormal with sigma^2 = ln(1 + cv^2) and mu = -sigma^2 / 2 has mean 1 and std cv; 200,000 draws put the
    sample's mean within 0.3% and its std within 2% of those."""
    j = StepJitter(cv, seed=7)
    x = np.array([j.one() for _ in range(1000)] + list(j.peek(199_000)))
    assert x.mean() == pytest.approx(1.0, abs=0.003)
    assert x.std() == pytest.approx(cv, rel=0.02)
    assert (x > 0).all()


def test_jitter_is_seeded_and_peeking_consumes_nothing():
    a, b = StepJitter(0.2, seed=3), StepJitter(0.2, seed=3)
    ahead = list(a.peek(5000))  # past one batch: the buffer grows
    assert [b.one() for _ in range(5000)] == pytest.approx(ahead)
    assert a.one() == pytest.approx(ahead[0])


def test_jitter_breaks_a_closed_loops_lock_step_and_keeps_its_mean():
    """C = 4, max_num_seqs 2, one prefill + 3 decode steps a request (test_scheduler's Little's-law case): with
    equal steps every request repeats one pattern, so TTFT p90 equals p50 (50 ms). With steps of mean 10 ms and
    CV 0.3 the requests fall out of step (p90 above p50) while throughput stays 2 requests per 4 mean steps =
    50 req/s."""
    base = EngineConfig(max_num_seqs=2, max_num_batched_tokens=256, num_blocks=1000, async_scheduling=False)
    steady = closed_loop(base, 4)
    assert steady["ttft_ms_p90"] == pytest.approx(steady["ttft_ms_p50"]) == pytest.approx(50.0)
    noisy = closed_loop(base, 4, jitter_cv=0.3)
    assert noisy["ttft_ms_p90"] > 1.1 * noisy["ttft_ms_p50"]
    assert noisy["request_throughput"] == pytest.approx(50.0, rel=0.05)
    assert math.isfinite(noisy["tpot_ms_p50"])


def test_dp_attention_groups_of_one_replica_share_their_jitter():
    """The groups of one replica step in lockstep (the MoE all-to-all), so they draw the same multipliers; a second
    replica draws its own."""
    from bench.config.catalog import get_model
    from bench.planner import simulate as sim
    from bench.planner.deployment import Deployment
    from bench.planner.factors import efficiency_for, get_gpu, resolve_quant

    eff = efficiency_for("h200", "fp8")[0].model_copy(update={"step_jitter_cv": 0.2})
    dep = Deployment(hp=get_model("glm-5.2").hp, gpu=get_gpu("h200"), quant=resolve_quant("fp8"), tp=8, ep=True,
                     eff=eff, dp_attention=8)
    s = sim.setup(dep, 2, max_num_seqs=64, max_model_len=4096)
    draws = [tuple(e.jitter.peek(3)) for e in sim.engines(s)]
    assert len(draws) == 16 and len(set(draws[:8])) == 1 and len(set(draws[8:])) == 1 and draws[0] != draws[8]
