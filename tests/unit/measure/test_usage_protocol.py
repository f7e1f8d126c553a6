"""Issue 25: a provider's malformed `usage` is a protocol error on its request (with the raw value), not an
abort: the request keeps its timings, the bad count is dropped, and the row counts such requests."""

from __future__ import annotations

import pytest

from bench.measure.client import read_usage
from bench.measure.metrics import RequestRecord, summarize
from tests.unit.measure.test_client_http import _send_all, _Server


def _rec() -> RequestRecord:
    return RequestRecord(request_idx=0, send_ns=0, input_tokens=2, max_tokens=2)


@pytest.mark.parametrize("usage,raw,field", [
    ({"prompt_tokens": 2, "completion_tokens": "8"}, '"8"', "completion_tokens"),
    ({"prompt_tokens": 2, "completion_tokens": 1e300}, "1e+300", "completion_tokens"),
    ({"prompt_tokens": "abc", "completion_tokens": 2}, '"abc"', "prompt_tokens"),
    ({"prompt_tokens": 2, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1e30}}, "1e+30",
     "prompt_tokens_details.cached_tokens"),
    ({"prompt_tokens": -5, "completion_tokens": 2}, "-5", "prompt_tokens"),
    ({"prompt_tokens": 2, "completion_tokens": -1}, "-1", "completion_tokens"),
    ({"prompt_tokens": 2, "completion_tokens": True}, "true", "completion_tokens"),
    ({"prompt_tokens": 2, "completion_tokens": 10**30}, str(10**30), "completion_tokens"),
])
def test_a_malformed_count_is_a_protocol_error_with_the_raw_value_and_is_dropped(usage, raw, field):
    rec = _rec()
    read_usage(usage, rec)
    assert rec.protocol_error is not None and f"usage.{field}" in rec.protocol_error and raw in rec.protocol_error
    got = {"prompt_tokens": rec.usage_prompt_tokens, "completion_tokens": rec.usage_completion_tokens,
           "prompt_tokens_details.cached_tokens": rec.cached_input_tokens}
    assert got[field] is None
    for other, value in got.items():  # the well-formed counts are kept
        if other != field and other in usage:
            assert value == usage[other]


def test_well_formed_and_null_counts_are_not_errors():
    rec = _rec()
    read_usage({"prompt_tokens": 2, "completion_tokens": 0, "prompt_tokens_details": None}, rec)
    assert rec.protocol_error is None and (rec.usage_prompt_tokens, rec.usage_completion_tokens) == (2, 0)
    rec = _rec()
    read_usage({"prompt_tokens": 2, "completion_tokens": None, "prompt_tokens_details": {"cached_tokens": 0}}, rec)
    assert rec.protocol_error is None and rec.usage_completion_tokens is None and rec.cached_input_tokens == 0


def test_a_usage_that_is_not_an_object_is_a_protocol_error():
    rec = _rec()
    read_usage("lots", rec)
    assert rec.protocol_error == 'usage is not an object: "lots"'


def _stream(usage: bytes) -> list[bytes]:
    sse = (b'data: {"choices":[{"index":0,"text":" ba"}]}\n\n'
           b'data: {"choices":[{"index":0,"text":" be"}],"usage":' + usage + b'}\n\n'
           b'data: {"choices":[],"usage":' + usage + b'}\n\n'
           b"data: [DONE]\n\n")
    return [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(sse), sse]


def test_the_client_keeps_the_request_ok_and_records_the_protocol_error_once():
    bad = [b'{"prompt_tokens":2,"completion_tokens":"8"}', b'{"prompt_tokens":2,"completion_tokens":1e300}',
           b'{"prompt_tokens":"abc","completion_tokens":2}',
           b'{"prompt_tokens":2,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1e30}}',
           b'{"prompt_tokens":-3,"completion_tokens":-2}', b'{"prompt_tokens":2,"completion_tokens":2}']
    server = _Server(replies=[_stream(u) for u in bad])
    recs = _send_all(server, n=len(bad))
    assert all(r.ok and r.error is None and len(r.chunk_ns) == 2 for r in recs), [r.error for r in recs]
    errors = [r.protocol_error for r in recs]
    assert errors[-1] is None
    for e, raw in zip(errors, ['"8"', "1e+300", '"abc"', "1e+30", "-3"], strict=False):
        assert e is not None and raw in e
    assert errors[0].count("usage.completion_tokens") == 1  # the usage repeated on two events: recorded once
    assert "usage.prompt_tokens " in errors[4] and "usage.completion_tokens" in errors[4]
    assert recs[1].output_tokens == 2  # the dropped count falls back to the chunks (no tokenizer here)
    row = summarize(recs)
    assert row["usage_protocol_errors"] == 5 and row["completed"] == 6
    assert row["output_tokens"] > 0
