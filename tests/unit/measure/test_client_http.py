"""The hand-written HTTP/1.1 transport of bench/measure/client.py (bench/measure/http.py) against scripted responses.

Two levels: `_Response` fed bytes directly (every split point of a body, no sockets), and
`StreamingClient.send` against raw asyncio servers on 127.0.0.1 that write exactly the bytes a
test scripts (Content-Length bodies, Connection: close, HTTP/1.0, redirects, silence, TLS).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from bench.measure.client import ClientConfig, RequestSpec, StreamingClient, _Response, run_async

REQ = RequestSpec(prompt="a b", input_len=2, output_len=2)
SSE = (
    b'data: {"choices":[{"index":0,"text":" ba"}]}\n\n'
    b'data: {"choices":[{"index":0,"text":" be"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED_EVENTS = [
    b'{"choices":[{"index":0,"text":" ba"}]}',
    b'{"choices":[{"index":0,"text":" be"}]}',
    b'{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2}}',
    b"[DONE]",
]


def _chunked(body: bytes, sizes: list[int], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    """Frame `body` as HTTP chunks of the given sizes (the rest in one last chunk), then 0 and trailers."""
    out, pos = b"", 0
    for n in [*sizes, len(body)]:
        piece = body[pos:pos + n]
        pos += len(piece)
        if piece:
            out += f"{len(piece):x}".encode() + ext + b"\r\n" + piece + b"\r\n"
    return out + b"0" + ext + b"\r\n" + trailers + b"\r\n"


class _Fed:
    """A `_Response` plus what it handed on: events with their read's timestamp."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.events: list[tuple[int, bytes]] = []
        self.resp = _Response(self.loop.create_future(), lambda now, evs: self.events.extend((now, e) for e in evs))

    def feed_all(self, pieces: list[bytes]) -> _Fed:
        for i, p in enumerate(pieces):
            self.resp.feed(i, p)
        return self

    def close(self) -> None:
        self.loop.close()

    @property
    def payloads(self) -> list[bytes]:
        return [e for _, e in self.events]

    def exception(self) -> BaseException | None:
        fut = self.resp.fut
        return fut.exception() if fut.done() else None


def _split_everywhere(raw: bytes, check: Callable[[_Fed, int], None]) -> None:
    """Feed `raw` in two reads cut at every position, then byte by byte; `check` each outcome."""
    for cut in [*range(1, len(raw)), -1]:
        pieces = [raw[i:i + 1] for i in range(len(raw))] if cut == -1 else [raw[:cut], raw[cut:]]
        fed = _Fed().feed_all(pieces)
        try:
            check(fed, cut)
        finally:
            fed.close()


# ---------------------------------------------------------------- _Response fed directly


def test_chunked_with_extensions_and_trailers_split_at_every_position():
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTRANSFER-ENCODING: Chunked\r\n\r\n"
    body = _chunked(SSE, [7, 40, 1, 30], ext=b";foo=bar", trailers=b"X-Trailer: 1\r\nX-Other: two\r\n")
    raw = head + body

    def check(fed: _Fed, cut: int) -> None:
        assert fed.resp.complete, cut
        assert fed.exception() is None, cut
        assert fed.payloads == EXPECTED_EVENTS, cut
        assert fed.resp.keep_alive, cut

    _split_everywhere(raw, check)


def test_chunk_size_line_and_crlf_split_in_three_reads():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(SSE, [20, 20, 20])
    for a in range(1, len(raw) - 1, 3):  # every third first cut keeps the pair loop small
        for b in range(a + 1, len(raw)):
            fed = _Fed().feed_all([raw[:a], raw[a:b], raw[b:]])
            assert fed.resp.complete and fed.payloads == EXPECTED_EVENTS, (a, b)
            fed.close()


def test_content_length_stream_split_at_every_position():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(SSE) + SSE

    def check(fed: _Fed, cut: int) -> None:
        assert fed.resp.complete and fed.payloads == EXPECTED_EVENTS, cut

    _split_everywhere(raw, check)


def test_each_event_gets_the_timestamp_of_the_read_that_completed_it():
    # read 0 = head, read 1 = first event and half the second, read 2 = the rest
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SSE)
    cut = SSE.index(b"be")
    fed = _Fed().feed_all([head, SSE[:cut], SSE[cut:]])
    assert [t for t, _ in fed.events] == [1, 2, 2, 2]
    fed.close()


def test_error_body_with_content_length_is_kept_and_completes():
    body = b'{"error":{"message":"max_tokens too large"}}'
    fed = _Fed().feed_all([b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n" % len(body), body])
    assert fed.resp.complete and fed.resp.status == 400 and fed.resp.error_body == body
    assert fed.events == []
    fed.close()


@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 0\r\n", False),
        # HTTP/1.0 closes after the response unless it says keep-alive (RFC 9112 section 9.3)
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.1 200 OK\r\n", False),  # no length: the body ends when the server closes
    ],
)
def test_keep_alive_decision(head, keep_alive):
    fed = _Fed().feed_all([head + b"\r\n"])
    assert fed.resp.keep_alive is keep_alive
    fed.close()


def test_interim_100_continue_is_skipped():
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SSE) + SSE)

    def check(fed: _Fed, cut: int) -> None:
        assert fed.resp.status == 200 and fed.resp.complete and fed.payloads == EXPECTED_EVENTS, cut

    _split_everywhere(raw, check)


def test_bad_content_length_fails_the_response_instead_of_raising():
    fed = _Fed().feed_all([b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n"])
    exc = fed.exception()
    assert isinstance(exc, ConnectionError) and "Content-Length" in str(exc)
    assert not fed.resp.keep_alive
    fed.close()


def test_repeated_headers_are_all_accepted():
    raw = (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nSET-COOKIE: c=3\r\n"
           b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE)
    fed = _Fed().feed_all([raw])
    assert fed.resp.complete and fed.payloads == EXPECTED_EVENTS
    fed.close()


# ---------------------------------------------------------------- raw servers and StreamingClient.send


@dataclass
class _Server:
    """Answers each request on a connection with the next scripted reply.

    A reply is a list of byte pieces written with a short pause between them (so they reach the
    client as separate reads), or a callable that writes it. `close_after` closes the socket after
    that reply. Records each request's raw head and body, and counts connections.
    """

    replies: list[list[bytes] | Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]]
    close_after: bool = False
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    eofs: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eofs += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                reply = self.replies.pop(0) if self.replies else [b"HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n"]
                if callable(reply):
                    await reply(reader, writer)
                else:
                    for piece in reply:
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(0.002)
                if self.close_after:
                    writer.close()
                    return
        finally:
            writer.close()


async def _serve(server: _Server, ssl_ctx: ssl.SSLContext | None = None) -> asyncio.base_events.Server:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_ctx)
    server.port = srv.sockets[0].getsockname()[1]
    return srv


def _send_all(server: _Server, n: int = 1, ssl_ctx: ssl.SSLContext | None = None, scheme: str = "http",
              path: str = "", **cfg_kw) -> list:
    async def go():
        srv = await _serve(server, ssl_ctx)
        try:
            cfg = ClientConfig(base_url=f"{scheme}://127.0.0.1:{server.port}{path}", model="m", **cfg_kw)
            async with StreamingClient(cfg) as client:
                recs = []
                for i in range(n):
                    recs.append(await client.send(i, REQ))
            await asyncio.sleep(0.02)  # let the server's handlers see the client's EOF and end
            return recs
        finally:
            srv.close()
            await srv.wait_closed()

    return asyncio.run(go())


def _ok(rec) -> None:
    assert rec.error is None and rec.ok, rec.error
    assert rec.output_text == " ba be" and rec.usage_completion_tokens == 2


def test_content_length_stream_then_reuse():
    reply = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(SSE),
             SSE[:30], SSE[30:]]
    server = _Server(replies=[reply, reply])
    recs = _send_all(server, n=2)
    for rec in recs:
        _ok(rec)
    assert server.connections == 1  # keep-alive reuse


@pytest.mark.parametrize("status", [400, 500])
def test_error_status_with_content_length_body(status):
    body = b'{"error":{"message":"bad max_tokens"}}'
    server = _Server(replies=[[b"HTTP/1.1 %d Err\r\nContent-Length: %d\r\n\r\n" % (status, len(body)), body]])
    (rec,) = _send_all(server)
    assert rec.http_status == status and not rec.ok
    assert rec.error == f"HTTP {status}: {body.decode()}"


def test_chunked_error_body():
    body = b"Internal Server Error"
    server = _Server(replies=[[b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(body, [5])]])
    (rec,) = _send_all(server)
    assert rec.error == "HTTP 500: Internal Server Error"


def test_connection_close_and_server_closing_after_body_open_new_connections():
    reply = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(SSE), SSE]
    server = _Server(replies=[reply, reply, reply], close_after=True)
    recs = _send_all(server, n=3)
    for rec in recs:
        _ok(rec)
    assert server.connections == 3


def test_read_until_close_body_http_1_0():
    # HTTP/1.0 without Content-Length: the body is everything until the server closes.
    reply = [b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n", SSE[:50], SSE[50:]]
    server = _Server(replies=[reply, reply], close_after=True)
    recs = _send_all(server, n=2)
    for rec in recs:
        _ok(rec)
    assert server.connections == 2


def test_http_1_0_with_length_is_not_reused():
    """An HTTP/1.0 reply closes the connection; the pool must not hand it out again."""
    reply = [b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SSE), SSE]

    async def go():
        server = _Server(replies=[reply])  # the server keeps the socket open: only the client's rule decides
        srv = await _serve(server)
        try:
            async with StreamingClient(ClientConfig(base_url=f"http://127.0.0.1:{server.port}", model="m")) as c:
                rec = await c.send(0, REQ)
                n_idle = len(c._idle)
            await asyncio.sleep(0.02)  # let the server's handler see the client's EOF and end
            return rec, n_idle
        finally:
            srv.close()

    rec, idle = asyncio.run(go())
    _ok(rec)
    assert idle == 0


def test_json_200_is_a_clear_error_not_a_hang():
    body = json.dumps({"choices": [{"text": " ba be"}], "usage": {"completion_tokens": 2}}).encode()
    server = _Server(replies=[[b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                               % len(body), body]])
    t0 = time.monotonic()
    (rec,) = _send_all(server, timeout_s=5)
    assert time.monotonic() - t0 < 2
    assert not rec.ok and rec.http_status == 200
    assert "not an event stream" in rec.error and "application/json" in rec.error and '"choices"' in rec.error


@pytest.mark.parametrize("status", [301, 307, 308])
def test_redirect_is_an_error_naming_status_and_location(status):
    server = _Server(replies=[[b"HTTP/1.1 %d Moved\r\nLocation: https://other.example/v1/completions\r\n"
                               b"Content-Length: 0\r\n\r\n" % status]])
    (rec,) = _send_all(server)
    assert not rec.ok
    assert rec.error.startswith(f"HTTP {status}") and "https://other.example/v1/completions" in rec.error


def test_timeout_when_server_never_answers_drops_the_connection():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(reader.read(), 3)  # until the client gives up and closes

    server = _Server(replies=[silent])
    t0 = time.monotonic()
    (rec,) = _send_all(server, timeout_s=0.3)
    assert rec.error == "timeout after 0.3 s"
    assert time.monotonic() - t0 < 2


def test_timeout_when_server_stops_mid_stream_drops_the_connection():
    first = SSE[:SSE.index(b"\n\n") + 2]

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await asyncio.wait_for(reader.read(), 3)  # until the client gives up and closes
        eofs.append(True)

    eofs: list[bool] = []
    server = _Server(replies=[stall])

    async def go():
        srv = await _serve(server)
        try:
            async with StreamingClient(ClientConfig(base_url=f"http://127.0.0.1:{server.port}", model="m",
                                                    timeout_s=0.3)) as c:
                rec = await c.send(0, REQ)
                n_open, n_idle = len(c._open), len(c._idle)
                await asyncio.sleep(0.05)  # before __aexit__ closes everything: the send must have closed it
            return rec, n_open, n_idle
        finally:
            srv.close()

    t0 = time.monotonic()
    rec, n_open, n_idle = asyncio.run(go())
    assert time.monotonic() - t0 < 2
    assert rec.error == "timeout after 0.3 s"
    assert len(rec.chunk_ns) == 1  # the first event arrived before the stall
    assert n_open == 0 and n_idle == 0  # the connection was dropped, not pooled
    assert eofs == [True]  # and closed: the server saw EOF


def test_request_line_host_header_and_headers():
    reply = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SSE), SSE]
    server = _Server(replies=[reply])
    (rec,) = _send_all(server, path="/gw/")
    _ok(rec)
    head = server.requests[0][0].decode()
    assert head.startswith("POST /gw/v1/completions HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in head
    assert "\r\nAccept-Encoding: identity\r\n" in head  # otherwise a server may gzip a body we cannot read


@pytest.mark.parametrize(
    "base_url, endpoint, path",
    [
        ("http://h:8000", "completions", "/v1/completions"),
        ("http://h:8000/", "chat", "/v1/chat/completions"),
        ("http://h:8000/v1", "completions", "/v1/completions"),  # the OpenAI-SDK style base_url
        ("https://api.together.xyz/v1/", "chat", "/v1/chat/completions"),
        ("https://api.fireworks.ai/inference/v1", "chat", "/inference/v1/chat/completions"),
        ("https://open.bigmodel.cn/api/paas/v4", "chat", "/api/paas/v4/chat/completions"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "chat", "/v1beta/openai/chat/completions"),
        ("http://gateway/vllm-a", "completions", "/vllm-a/v1/completions"),  # a proxy prefix in front of a server
    ],
)
def test_request_path_from_base_url(base_url, endpoint, path):
    c = StreamingClient(ClientConfig(base_url=base_url, model="m", endpoint=endpoint))
    assert c._path == path.encode()
    assert c.url.endswith(path) and c.url.startswith(base_url.split("/")[0] + "//")


@pytest.mark.parametrize(
    "base_url, host",
    [("http://h:8000", "h:8000"), ("https://api.x.com", "api.x.com"), ("http://[::1]:9000/v1", "[::1]:9000")],
)
def test_host_header(base_url, host):
    c = StreamingClient(ClientConfig(base_url=base_url, model="m"))
    assert f"\r\nHost: {host}\r\n".encode() in b"\r\n" + c._header_lines


def test_api_key_only_in_authorization_header_and_never_in_errors_or_repr():
    key = "sk-test-SECRET-0123456789"
    # the server echoes the key back in its error body, as some gateways do
    body = b'{"error":"invalid key ' + key.encode() + b'"}'
    server = _Server(replies=[[b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body), body]])
    (rec,) = _send_all(server, api_key=key)
    head, req_body = server.requests[0]
    lines = [ln for ln in head.decode().split("\r\n") if key in ln]
    assert lines == [f"Authorization: Bearer {key}"]
    assert key.encode() not in req_body
    assert rec.error.startswith("HTTP 401") and key not in rec.error and "invalid key" in rec.error
    cfg = ClientConfig(base_url="http://h", model="m", api_key=key)
    assert key not in repr(cfg) and key not in str(cfg)


def test_malformed_event_shape_is_a_recorded_error_not_a_transport_crash(caplog):
    bad = b'data: {"choices":["x"]}\n\ndata: {"usage":7}\n\ndata: [DONE]\n\n'
    server = _Server(replies=[[b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(bad), bad]])
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        (rec,) = _send_all(server)
    assert not rec.ok and rec.error is not None and "unexpected event" in rec.error
    assert not [r for r in caplog.records if r.name == "asyncio"]


# ---------------------------------------------------------------- TLS with a self-signed certificate


def _self_signed(tmp_path) -> tuple[str, str]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _tls_send(tmp_path, **cfg_kw):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    reply = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(SSE, [10, 50])]
    server = _Server(replies=[reply, reply])

    async def go():
        srv = await _serve(server, ctx)
        try:
            # "localhost" so the certificate's name is checked (server_hostname), not an IP address
            cfg = ClientConfig(base_url=f"https://localhost:{server.port}", model="m", timeout_s=5,
                               **{k: (cert if v == "CERT" else v) for k, v in cfg_kw.items()})
            async with StreamingClient(cfg) as c:
                recs = [await c.send(i, REQ) for i in range(2)]
            await asyncio.sleep(0.02)  # let the server's handlers see the client's EOF and end
            return recs
        finally:
            srv.close()

    return server, asyncio.run(go())


def test_tls_verifies_by_default_and_rejects_a_self_signed_cert(tmp_path):
    _, recs = _tls_send(tmp_path)
    assert all("CERTIFICATE_VERIFY_FAILED" in (r.error or "") for r in recs), [r.error for r in recs]


def test_tls_with_ca_file_streams_and_reuses_the_connection(tmp_path):
    server, recs = _tls_send(tmp_path, ca_file="CERT")
    for rec in recs:
        _ok(rec)
    assert server.connections == 1
    assert "\r\nHost: localhost:" in server.requests[0][0].decode()


def test_tls_verification_can_be_switched_off(tmp_path):
    _, recs = _tls_send(tmp_path, verify_tls=False)
    for rec in recs:
        _ok(rec)


def test_run_async_still_works():
    async def f() -> int:
        return 3

    assert run_async(f()) == 3
