"""On the real vLLM engine: the input length a workload asks for is exactly the server's usage.prompt_tokens,
for completions, for chat (the chat template's tokens are subtracted from the content) and for prefix prompts."""

from __future__ import annotations

import pytest

from bench.config.sweep import LoadPoint, WorkloadSpec
from bench.engines.vllm_server import SERVED_MODEL_NAME
from bench.measure.client import ClientConfig, StreamingClient, run_async
from bench.measure.loadgen import run_load
from bench.measure.workloads import PromptFactory, generate

pytestmark = pytest.mark.e2e


def _prompt_tokens(server, spec: WorkloadSpec, n: int) -> list[tuple[int, int | None, int, int | None]]:
    factory = PromptFactory.for_model_dir(server.model_path)
    assert factory is not None
    reqs = generate(spec, n, factory)
    cfg = ClientConfig(base_url=server.base_url, model=SERVED_MODEL_NAME, endpoint=spec.endpoint)

    async def main():
        async with StreamingClient(cfg) as client:
            return await run_load(client.send, [], reqs, LoadPoint(concurrency=n, num_requests=n))

    res = run_async(main())
    assert all(r.ok for r in res.records), [r.error for r in res.records]
    return [(r.input_tokens, r.usage_prompt_tokens, r.max_tokens, r.usage_completion_tokens) for r in res.records]


def test_requested_input_length_equals_server_prompt_tokens(vllm_server):
    for spec in (WorkloadSpec(kind="ranged", input_len=40, output_len=2, range_ratio=0.5),
                 WorkloadSpec(input_len=24, output_len=2, endpoint="chat"),
                 WorkloadSpec(kind="prefix", num_prefixes=2, prefix_len=32, input_len=8, output_len=2)):
        rows = _prompt_tokens(vllm_server, spec, 3)
        assert all(req == usage for req, usage, _, _ in rows), (spec.kind, spec.endpoint, rows)
        assert all(want == got for _, _, want, got in rows), rows  # output pinned by ignore_eos
        if spec.endpoint == "chat":
            assert {req for req, _, _, _ in rows} == {24}  # template tokens included in the 24
        if spec.kind == "prefix":
            assert {req for req, _, _, _ in rows} == {40}  # 32 prefix + 8 suffix
