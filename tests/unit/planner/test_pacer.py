"""`maas-bench sim --virtual`: the simulated server times its tokens by the scheduler simulation in real time.

Expected times come from the step model alone (bench.planner.simulate.StepTimer on the deployment), not from the
scheduler: one request on an idle engine is one prefill step and then one decode step per token; two sent at once
are prefilled in one step. The real-time path must reproduce those over HTTP within the event loop's lateness."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bench.errors import UserInputError
from bench.planner import simulate as sim
from bench.planner.pacer import RealTimeEngines, parse_virtual
from bench.sim import SimConfig, run_sim_in_thread

SPEC = "h200:glm-4.5-air:fp8"
ISL, OSL = 2000, 12


async def _stream(session: aiohttp.ClientSession, url: str, isl: int, osl: int) -> list[float]:
    body = {"model": "m", "prompt": "w " * isl, "max_tokens": osl, "ignore_eos": True, "stream": True}
    t0, times = time.perf_counter(), []
    async with session.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: {"):
                times.append(time.perf_counter() - t0)
    return times


def _run(url: str, n: int) -> list[list[float]]:
    async def main() -> list[list[float]]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/v1/models") as r:  # the connection is open before the clock starts
                await r.read()
            return await asyncio.gather(*[_stream(s, url, ISL, OSL) for _ in range(n)])

    return asyncio.run(main())


@pytest.fixture(scope="module")
def setup() -> sim.SimSetup:
    return parse_virtual(SPEC, max_num_seqs=8, max_model_len=4096)


def test_one_request_is_one_prefill_step_then_a_decode_step_per_token(setup):
    timer = sim.StepTimer(setup.dep)
    prefill, decode = timer(0, 0.0, [(0.0, float(ISL))]), timer(1, ISL + OSL / 2, ())
    assert prefill > 0.02 and decode > 0.005  # long enough that loop lateness (~1 ms) is small beside them
    with run_sim_in_thread(SimConfig(), pacer=RealTimeEngines(setup)) as url:
        (times,) = _run(url, 1)
    assert len(times) == OSL
    # never before the step ends; after it by the HTTP round trip and the server's parsing of a 2000-word prompt
    # (0.5-4.5 ms on the 2-core CI box) and the loop's wake-up lateness (about 1 ms), which do not add up
    assert prefill - 0.001 <= times[0] <= prefill + 0.008
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(decode, rel=0.1)


def test_two_requests_sent_together_share_one_prefill_step(setup):
    """Submitted in one event-loop tick (over HTTP two requests arrive a little apart and may take two steps, as
    on a real engine): one step prefills both, then they decode side by side, one token a step each."""
    timer = sim.StepTimer(setup.dep)
    both = timer(0, 0.0, [(0.0, float(ISL)), (0.0, float(ISL))])
    assert both > 1.3 * timer(0, 0.0, [(0.0, float(ISL))])  # tells one step of two prompts from one of one

    async def main() -> list[list[float]]:
        pacer = RealTimeEngines(setup)
        loop = asyncio.get_running_loop()

        async def one() -> list[float]:
            out = []
            async for _, n in pacer.token_times(ISL, OSL):
                out += [loop.time() - pacer.t0] * n
            return out

        try:
            return await asyncio.gather(one(), one())
        finally:
            pacer.close()

    a, b = asyncio.run(main())
    for times in (a, b):
        assert len(times) == OSL and times[0] == pytest.approx(both, abs=0.004)
        decode = timer(2, ISL + OSL / 2, ())
        assert (times[-1] - times[0]) / (OSL - 1) == pytest.approx(decode, rel=0.1)


def test_a_request_past_max_model_len_is_refused_as_vllm_does(setup):
    with run_sim_in_thread(SimConfig(), pacer=RealTimeEngines(setup)) as url:
        async def main() -> tuple[int, str]:
            body = {"model": "m", "prompt": "w " * 4000, "max_tokens": 200, "stream": True}
            async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json=body) as r:
                return r.status, await r.text()

        status, text = asyncio.run(main())
    assert status == 400 and "maximum context length is 4096" in text


def test_a_reader_that_falls_behind_still_gets_every_token(setup):
    """The engine may queue several steps' tokens before the stream reads them (a busy loop); the stream ends on the
    tokens it read, not on the ones queued, so the last step's tokens are not left behind."""

    async def main() -> list[int]:
        pacer = RealTimeEngines(setup)
        times = pacer.token_times(16, 6)
        got = [(await anext(times))[1]]
        await asyncio.sleep(0.3)  # every step ends meanwhile: the rest waits in the queue
        got += [n async for _, n in times]
        pacer.close()
        return got

    got = asyncio.run(main())
    assert sum(got) == 6


def test_a_client_that_leaves_is_aborted_in_the_engine(setup):
    """vLLM aborts a request whose client went away; so does the engine here: its slot and blocks are free and
    nothing is outstanding, where the request alone would have run for another 100 steps."""

    async def main() -> tuple[int, int]:
        pacer = RealTimeEngines(setup)
        times = pacer.token_times(16, 100)
        await anext(times)
        await anext(times)
        await times.aclose()
        await asyncio.sleep(0.1)
        e = pacer.engines[0]
        pacer.close()
        return e.outstanding, len(e.running)

    assert asyncio.run(main()) == (0, 0)


@pytest.mark.parametrize("spec, gpu, count", [("h200x8:glm-4.5-air:fp8", "h200", 8),
                                              ("mi300x:glm-4.5-air:fp8", "mi300x", 1),
                                              ("mi300xx2:glm-4.5-air:fp8", "mi300x", 2)])
def test_the_gpu_count_is_split_off_the_end_of_the_gpu_id(spec, gpu, count):
    s = parse_virtual(spec, max_num_seqs=8, max_model_len=4096)
    assert (s.dep.gpu.id, s.dep.tp) == (gpu, count)


@pytest.mark.parametrize("spec, pattern", [("h200", r"GPU\[xCOUNT\]:MODEL:QUANT"), ("h200x0:glm-4.5-air:fp8", "count"),
                                           ("h200:no-such-model:fp8", r"^--virtual: .*no-such-model")])
def test_bad_virtual_specs_are_one_line_errors(spec, pattern):
    with pytest.raises(UserInputError, match=pattern):
        parse_virtual(spec)
