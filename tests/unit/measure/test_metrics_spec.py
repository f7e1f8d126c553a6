"""Speculative decoding streams several tokens per chunk: every emitted token is counted once.

Hand-built requests (times in ms): with speculation the server emits 1 token at the end of the prefill
(t = 100) and then 3 tokens per verification step (t = 130, 160, 190); without it, 1 token per chunk
every 10 ms. Both emit 10 tokens (server usage) between t = 100 and t = 190, so throughput, TPOT and
cost must be identical; ITL (per chunk) and tokens per chunk differ. Expected values by hand.
"""

from __future__ import annotations

import pytest

from bench.econ.row_cost import cost_columns
from bench.measure.metrics import RequestRecord, summarize

MS = 1_000_000


def _req(chunks_ms: list[int], tokens: list[int]) -> RequestRecord:
    return RequestRecord(request_idx=0, send_ns=0, input_tokens=16, max_tokens=10, ok=True,
                         chunk_ns=[t * MS for t in chunks_ms], chunk_tokens=tokens, done_ns=chunks_ms[-1] * MS,
                         usage_prompt_tokens=16, usage_completion_tokens=sum(tokens))


SPEC = _req([100, 130, 160, 190], [1, 3, 3, 3])
PLAIN = _req(list(range(100, 200, 10)), [1] * 10)


@pytest.mark.parametrize("rec", [SPEC, PLAIN], ids=["spec", "plain"])
def test_tokens_counted_once_whatever_the_chunking(rec):
    row = summarize([rec])
    assert row["output_tokens"] == 10 and row["window_output_tokens"] == pytest.approx(10)
    assert row["duration_s"] == pytest.approx(0.19)
    assert row["output_tok_s"] == pytest.approx(10 / 0.19)
    assert row["tpot_ms_p50"] == pytest.approx(90 / 9)  # (E2EL - TTFT) / (tokens - 1): per token
    row["usd_per_gpu_hour"] = 2.0
    # $2/h / (10 / 0.19 tok/s x 3600 s/h / 1e6) = 2 x 0.19 x 1e6 / 36000
    assert cost_columns(row)["usd_per_m_output"] == pytest.approx(2 * 0.19 * 1e6 / 36000)


def test_itl_is_per_chunk_and_tokens_per_chunk_is_the_step_size():
    spec, plain = summarize([SPEC]), summarize([PLAIN])
    assert spec["itl_ms_p50"] == pytest.approx(30) and plain["itl_ms_p50"] == pytest.approx(10)
    assert spec["decode_tokens_per_chunk"] == pytest.approx(3.0)  # 9 decode tokens / 3 chunks
    assert plain["decode_tokens_per_chunk"] == pytest.approx(1.0)
