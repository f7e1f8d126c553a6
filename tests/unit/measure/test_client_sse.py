"""SSE parsing: frames split anywhere, comments, CRLF, usage-only final chunk, [DONE]."""

import json

from bench.measure.client import SSEParser

STREAM = (
    b": keep-alive\n\n"
    b'data: {"choices":[{"index":0,"text":" ba"}]}\n\n'
    b": ping\n"
    b'data: {"choices":[{"index":0,"text":" be"}]}\r\n\r\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
    b"data: [DONE]\n\n"
)


def _events(parser: SSEParser, pieces: list[bytes]) -> list[str]:
    out: list[str] = []
    for p in pieces:
        out += parser.feed(p)
    return out + parser.flush()


def test_whole_stream_gives_four_events_in_order():
    events = _events(SSEParser(), [STREAM])
    assert len(events) == 4
    assert json.loads(events[0])["choices"][0]["text"] == " ba"
    assert json.loads(events[1])["choices"][0]["text"] == " be"
    assert json.loads(events[2])["usage"]["completion_tokens"] == 2
    assert events[3] == "[DONE]"


def test_every_split_point_gives_the_same_events():
    expected = _events(SSEParser(), [STREAM])
    for cut in range(1, len(STREAM)):
        assert _events(SSEParser(), [STREAM[:cut], STREAM[cut:]]) == expected, cut


def test_byte_at_a_time():
    expected = _events(SSEParser(), [STREAM])
    assert _events(SSEParser(), [STREAM[i:i + 1] for i in range(len(STREAM))]) == expected


def test_multiline_data_is_joined_with_newline_and_no_space_variant():
    events = _events(SSEParser(), [b"data:a\ndata: b\n\n"])
    assert events == ["a\nb"]


def test_stream_closed_without_trailing_blank_line_is_flushed():
    p = SSEParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.flush() == ["[DONE]"]


def test_comment_only_input_gives_no_events():
    assert _events(SSEParser(), [b": a\n\n: b\n\n"]) == []
