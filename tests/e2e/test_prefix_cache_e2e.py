"""On the real vLLM CPU engine: multi-turn sessions hit the prefix cache (issue 15).

One extra server with prefix caching on (the shared fixture has it off); 2 sessions x 3 turns each,
a 512-token shared system prompt (4 whole 128-token CPU blocks), so the run is short; three such rounds per
server, taking turns, for the TTFT comparison (a few seconds in all).
"""

from __future__ import annotations

import statistics

import pytest

from bench.config.sweep import EngineSpec, LoadPoint, ServerSpec, WorkloadSpec
from bench.engines.modeldir import materialize
from bench.engines.vllm_server import SERVED_MODEL_NAME, VllmServer, has_nvidia_gpu
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.loadgen import run_load
from bench.measure.metrics import summarize
from bench.measure.workloads import PromptFactory, iter_sessions

pytestmark = pytest.mark.e2e

SPEC = WorkloadSpec(kind="multiturn", turns=3, input_len=128, output_len=8, system_prompt_len=512)


@pytest.fixture(scope="module")
def cached_server(tmp_path_factory):
    pytest.importorskip("vllm")
    model_dir = materialize("glm-4.5-tiny", None, tmp_path_factory.mktemp("models"))
    spec = ServerSpec(model="glm-4.5-tiny", max_model_len=2048, max_num_seqs=8, enable_prefix_caching=True)
    server = VllmServer(spec, str(model_dir), EngineSpec(startup_timeout_s=600),
                        tmp_path_factory.mktemp("logs") / "cached.log", on_cpu=not has_nvidia_gpu())
    server.start()
    yield server
    server.stop()


def _run(server, seed_offset: int = 0):
    factory = PromptFactory.for_model_dir(server.model_path)
    assert factory is not None
    cfg = ClientConfig(base_url=server.base_url, model=SERVED_MODEL_NAME)

    async def main():
        async with StreamingClient(cfg) as client:
            return await run_load(client.send, [], iter_sessions(SPEC, factory, seed_offset),
                                  LoadPoint(concurrency=1, num_requests=2, cooldown=False))

    res = run_async(main())
    assert all(r.ok for r in res.records), [r.error for r in res.records]
    return res.records, summarize(res.records)


def _later_ttft_ms(recs) -> list[float]:
    return [r.ttft_ms for r in recs if r.turn > 1]


def test_multiturn_hits_the_prefix_cache_and_later_turns_start_faster(cached_server, vllm_server):
    on_recs, on = _run(cached_server)
    off_recs, off = _run(vllm_server)
    assert [r.turn for r in on_recs] == [1, 2, 3, 1, 2, 3]
    # turn 2 of session 0: its prompt repeats turn 1's prompt (643 tokens) + 8-token answer -> 5 whole blocks
    assert on_recs[1].cached_input_tokens == 640
    assert on["cached_input_frac"] > 0.5, on
    assert off["cached_input_frac"] == 0.0  # caching off: the server reports 0 cached tokens
    # Later turns prefill ~140 new tokens with the cache against ~780-920 without it. On 2 cores shared with
    # other jobs one burst of load can slow a few requests of either server (4 later turns each per round), so
    # the servers take turns for 3 rounds of fresh sessions (same system prompt) and the medians of the 12
    # later turns each are compared: a burst then lands on both, and the median ignores a few slow requests.
    on_ttft, off_ttft = _later_ttft_ms(on_recs), _later_ttft_ms(off_recs)
    for k in (1, 2):
        recs, _ = _run(cached_server, seed_offset=k)
        assert all(r.cached_input_tokens >= 640 for r in recs if r.turn > 1), [r.cached_input_tokens for r in recs]
        on_ttft += _later_ttft_ms(recs)
        off_ttft += _later_ttft_ms(_run(vllm_server, seed_offset=k)[0])
    print(f"later-turn TTFT ms, cache on: {sorted(on_ttft)}; off: {sorted(off_ttft)}")
    assert len(on_ttft) == len(off_ttft) == 12
    assert statistics.median(on_ttft) < statistics.median(off_ttft), (sorted(on_ttft), sorted(off_ttft))
