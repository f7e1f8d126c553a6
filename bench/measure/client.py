"""Async streaming client for OpenAI-compatible /v1/completions and /v1/chat/completions.

It records raw observations (per-chunk arrival times, usage, text) into a `RequestRecord` and
never aggregates; bench/measure/metrics.py owns every formula. Timestamps are perf_counter_ns() taken
right after the network read that completes an SSE event, before any parsing, so parsing cost
is never charged to the server (vLLM's client stamps after parsing each event instead).

Client starvation is recorded, not hidden: when one network read holds several content events,
the client read too late to see them apart (the server sent them at different times); they all
get that read's timestamp and `coalesced_chunks` counts the extra ones, so bench/measure/loadgen.py can
flag a point whose ITL the client, not the server, produced.

Transport (bench.measure.http): a minimal HTTP/1.1 client on an asyncio Protocol (keep-alive pool, chunked or
length-delimited bodies, TLS for https), not aiohttp. Why: the timestamp is taken at the top of
`data_received`, the first Python code that sees the bytes, and a chunk then costs one callback
(chunked decoding, SSE split, json.loads, list append) instead of a parser feed, a future wake-up
and a coroutine resumption. On one core that is several times the chunk capacity of an aiohttp
client such as vLLM's benchmark client (tests/perf). With uvloop installed, `run_async` uses it.
Per-chunk token counts (`chunk_tokens`) are computed after the stream ends, off the hot path.

Timestamps on plain http under Linux are the kernel's receive times (bench.measure.kstamp: SO_TIMESTAMPNS via
recvmsg on a transport of its own), so event-loop lag does not move them; https and platforms without kernel
stamps keep the asyncio path (stamped at the top of `data_received`). `RequestRecord.timestamp_source` says
which timed each request ("kernel", "loop", or "kernel+loop" when some reads came without a kernel stamp).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench.measure import kstamp
from bench.measure.http import SSEParser, _Conn, _Response
from bench.measure.metrics import RequestRecord
from bench.measure.redact import redact

__all__ = ["ClientConfig", "RequestRecord", "RequestSpec", "SSEParser", "StreamingClient", "api_path", "run_async"]

T = TypeVar("T")
_JSON = json.JSONDecoder()  # its .decode(str) skips json.loads' per-call type and encoding checks
IDLE_REUSE_S = 3.0  # never reuse a keep-alive connection idle longer (uvicorn drops them after 5 s)


@dataclass
class RequestSpec:
    """One request to send: a prompt (completions) or messages (chat), with pinned output length."""

    prompt: str | None
    input_len: int
    output_len: int
    messages: list[dict[str, str]] | None = None
    prefix_id: int | None = None
    arrival_s: float | None = None  # offset from the start, for trace replay
    session_id: int | None = None  # multiturn: the conversation this turn belongs to
    turn: int | None = None  # multiturn: 1-based turn number within the session


@dataclass
class ClientConfig:
    """Where and how to send requests.

    base_url is either a server root (``http://127.0.0.1:8000``, ``http://gateway/vllm-a``), to which
    ``/v1/completions`` or ``/v1/chat/completions`` is appended, or an API root as the OpenAI SDK
    takes it, whose last path segment is a version (``.../v1``, ``.../api/paas/v4``, ``.../v1beta/openai``),
    to which only ``/completions`` or ``/chat/completions`` is appended. See `api_path`.
    """

    base_url: str
    model: str
    endpoint: str = "completions"  # or "chat"
    # Read from an env var by the caller; sent only in the Authorization header, kept out of repr()
    # and redacted from error messages (every form: bench.measure.redact), never stored in results.
    api_key: str | None = field(default=None, repr=False)
    ignore_eos: bool = True  # vLLM extension that pins output length; providers may reject it
    temperature: float = 0.0
    timeout_s: float = 300.0  # whole request: connect, wait and stream
    extra_body: dict[str, Any] = field(default_factory=dict)
    ca_file: str | None = None  # https: trust this PEM CA bundle instead of the system store
    verify_tls: bool = True  # https: False skips certificate checks (self-signed test servers only)
    # plain http on Linux: chunk times are kernel receive stamps (bench.measure.kstamp); False = asyncio's path
    kernel_timestamps: bool = True


_VERSION_SEGMENT = re.compile(r"v\d+[a-z0-9]*|openai")


def api_path(base_path: str, endpoint: str) -> str:
    """The request path for a base_url's path.

    Provider docs give base URLs in the OpenAI SDK form, ending in the API version (``/v1``, Zhipu's
    ``/api/paas/v4``, Gemini's ``/v1beta/openai``); appending another ``/v1`` would 404. A server root
    or a proxy prefix (no version segment at the end) gets vLLM's and SGLang's ``/v1``.
    """
    leaf = "/chat/completions" if endpoint == "chat" else "/completions"
    base = base_path.rstrip("/")
    last = base.rsplit("/", 1)[-1].lower()
    if base and _VERSION_SEGMENT.fullmatch(last):
        return base + leaf
    return base + "/v1" + leaf


class StreamingClient:
    """Sends requests over a keep-alive connection pool; one instance per load point."""

    def __init__(self, cfg: ClientConfig, count_tokens: Callable[[str], int] | None = None) -> None:
        self.cfg = cfg
        self.count_tokens = count_tokens
        self.cancelled: list[RequestRecord] = []  # records of requests cancelled mid-stream
        u = urlsplit(cfg.base_url.strip())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/path] (got {cfg.base_url!r})")
        path = api_path(u.path, cfg.endpoint)
        host_header = u.netloc.rsplit("@", 1)[-1]  # keeps a non-default port (and IPv6 brackets)
        self.url = f"{u.scheme}://{host_header}{path}"
        self._host = u.hostname
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._ssl = _ssl_context(cfg) if u.scheme == "https" else None
        self._path = path.encode()
        # identity: without Accept-Encoding a server may compress, and this client does not decompress
        headers = [f"Host: {host_header}", "Content-Type: application/json", "Accept: text/event-stream",
                   "Accept-Encoding: identity", "User-Agent: maas-bench"]
        if cfg.api_key:
            headers.append(f"Authorization: Bearer {cfg.api_key}")
        self._header_lines = ("\r\n".join(headers) + "\r\n").encode()
        self._idle: list[_Conn] = []
        self._open: set[_Conn] = set()
        self._kstamp = self._ssl is None and cfg.kernel_timestamps and kstamp.AVAILABLE

    async def __aenter__(self) -> StreamingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in list(self._open):
            if c.transport is not None:
                c.transport.close()
        self._idle.clear()
        self._open.clear()

    async def _connect(self) -> _Conn:
        if self._kstamp:
            _, conn = await kstamp.open_connection(_Conn, self._host, self._port)
        else:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Conn, self._host, self._port, ssl=self._ssl,
                                                   server_hostname=self._host if self._ssl else None)
        self._open.add(conn)
        return conn

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if not c.lost and c.transport is not None and not c.transport.is_closing() \
                    and now - c.idle_since < IDLE_REUSE_S:
                return c
            self._drop(c)
        return None

    def _drop(self, c: _Conn) -> None:
        c.response = None
        if c.transport is not None:
            c.transport.close()
        self._open.discard(c)

    def payload(self, req: RequestSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": req.output_len,
            "temperature": self.cfg.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.cfg.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = req.output_len
            # Keep special tokens in the text so the client-side count can match usage.
            body["skip_special_tokens"] = False
        if self.cfg.endpoint == "chat":
            body["messages"] = req.messages or [{"role": "user", "content": req.prompt or ""}]
        else:
            body["prompt"] = req.prompt
        body.update(self.cfg.extra_body)
        return body

    def _request_bytes(self, req: RequestSpec) -> bytes:
        body = json.dumps(self.payload(req), separators=(",", ":")).encode()
        return (b"POST " + self._path + b" HTTP/1.1\r\n" + self._header_lines
                + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def send(self, idx: int, req: RequestSpec, warmup: bool = False,
                   scheduled_ns: int | None = None) -> RequestRecord:
        """Send one request and record what came back; never raises for a server or network error."""
        data = self._request_bytes(req)
        rec = RequestRecord(request_idx=idx, send_ns=0, input_tokens=req.input_len, max_tokens=req.output_len,
                           warmup=warmup, scheduled_ns=scheduled_ns, session_id=req.session_id, turn=req.turn)
        texts: list[str] = []
        state = {"done": False, "coalesced": 0}
        chat = self.cfg.endpoint == "chat"
        chunk_ns = rec.chunk_ns
        decode = _JSON.decode
        on_event = self._on_event
        key = self.cfg.api_key  # masked (every form) before any text is cut, so no part of it survives a cut

        def on_events(now: int, events: list[bytes]) -> None:
            n_before = len(chunk_ns)
            for ev in events:
                if ev == b"[DONE]":
                    state["done"] = True
                    continue
                try:
                    obj = decode(ev.decode("utf-8", errors="replace"))
                except ValueError:
                    rec.error = f"unparseable event: {redact(ev.decode('utf-8', errors='replace'), key)[:100]!r}"
                    continue
                try:
                    on_event(obj, now, rec, texts, chat)
                except (AttributeError, TypeError):  # e.g. "choices": ["x"]; free unless it raises
                    rec.error = f"unexpected event: {redact(ev.decode('utf-8', errors='replace'), key)[:100]}"
            if len(chunk_ns) - n_before > 1:
                state["coalesced"] += len(chunk_ns) - n_before - 1

        loop = asyncio.get_running_loop()
        rec.send_ns = time.perf_counter_ns()
        deadline = loop.time() + self.cfg.timeout_s  # one budget for connect, retry and stream
        conn: _Conn | None = None
        resp: _Response | None = None
        unstamped_before = 0
        try:
            for attempt in (0, 1):
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await asyncio.wait_for(self._connect(), max(deadline - loop.time(), 0.0))
                fut: asyncio.Future[None] = loop.create_future()
                unstamped_before = getattr(conn.transport, "unstamped_reads", 0)
                resp = _Response(fut, on_events)
                conn.response = resp
                assert conn.transport is not None
                conn.transport.write(data)
                try:
                    await asyncio.wait_for(fut, max(deadline - loop.time(), 0.0))
                    break
                except ConnectionResetError:
                    # a reused keep-alive connection the server had already closed: retry once on a new one
                    if reused and not resp.got_bytes and attempt == 0:
                        self._drop(conn)
                        conn = None
                        continue
                    raise
            assert resp is not None and conn is not None
            rec.http_status = resp.status
            rec.timestamp_source = _timestamp_source(conn, unstamped_before)
            rec.done_ns = time.perf_counter_ns()
            if not resp.is_sse:
                body = redact(resp.error_body.decode("utf-8", errors="replace"), key) or ""
                detail = body[:300].replace("\n", " ")
                if resp.status == 200:
                    ctype = resp.content_type.decode("latin-1")
                    rec.error = f"HTTP 200 but not an event stream (Content-Type: {ctype}; stream ignored?): {detail}"
                elif 300 <= resp.status < 400:
                    where = resp.location.decode("latin-1") or "?"
                    rec.error = (f"HTTP {resp.status} redirect to {where} (redirects are not followed; "
                                 f"set base_url to the final URL): {detail}")
                else:
                    rec.error = f"HTTP {resp.status}: {detail}"
            elif rec.error is None:
                if not state["done"]:
                    rec.error = "stream ended without [DONE]"
                elif not chunk_ns:
                    rec.error = "no content chunks"
                else:
                    rec.ok = True
            if resp.keep_alive and not conn.lost:
                conn.response = None
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                self._drop(conn)
            conn = None
        except asyncio.CancelledError:
            # The load generator cancels cool-down requests when the measured phase ends; keep what
            # they streamed (it counts toward the window's throughput), then let the cancellation go on.
            rec.cancelled = True
            if conn is not None and rec.chunk_ns:
                rec.timestamp_source = _timestamp_source(conn, unstamped_before)
            rec.error = "cancelled when the measured phase ended"
            rec.done_ns = time.perf_counter_ns()
            rec.coalesced_chunks = state["coalesced"]
            self.cancelled.append(rec)
            raise
        except asyncio.TimeoutError:
            rec.error = f"timeout after {self.cfg.timeout_s:g} s"
        except (OSError, ConnectionError) as e:
            rec.error = f"{type(e).__name__}: {e}"
        finally:
            if conn is not None:  # error or cancellation mid-response: the connection is not reusable
                self._drop(conn)
        if rec.done_ns is None:
            rec.done_ns = time.perf_counter_ns()
        # a gateway may echo the key back in its error body, raw or encoded: every form is masked
        rec.error = redact(rec.error, self.cfg.api_key)
        rec.protocol_error = redact(rec.protocol_error, self.cfg.api_key)
        rec.coalesced_chunks = state["coalesced"]
        rec.output_text = "".join(texts)
        if self.count_tokens is not None and rec.ok:
            count = self.count_tokens
            rec.client_output_tokens = count(rec.output_text)
            rec.chunk_tokens = [count(t) for t in texts]
        return rec

    @staticmethod
    def _on_event(obj: Any, now: int, rec: RequestRecord, texts: list[str], chat: bool) -> None:
        if not isinstance(obj, dict):
            raise TypeError("not an object")  # the caller records the event's text, masked, then cut
        choices = obj.get("choices")
        if "error" in obj and not choices:
            err = obj["error"]
            rec.error = f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
            return
        usage = obj.get("usage")
        if usage:
            read_usage(usage, rec)
        if choices:
            for choice in choices:
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if text:
                    rec.chunk_ns.append(now)
                    texts.append(text)


MAX_USAGE_TOKENS = 10**9  # above any context length: a larger count is a provider bug, not a measurement


def usage_count(value: Any) -> int | None:
    """A usage token count as sent, if it is one: a JSON integer in [0, MAX_USAGE_TOKENS]; else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return None


def read_usage(usage: Any, rec: RequestRecord) -> None:
    """Copy the usage block's token counts into `rec`; a malformed one is a protocol error on the request.

    Why not abort or fail the request: a provider that sends `"completion_tokens": "8"`, 1e300 or -3 still
    streamed the text, so the request's timings stand; the bad count is dropped (the client's own count is
    used, as when usage is missing), the raw value is kept in `rec.protocol_error`, and the row counts such
    requests (`usage_protocol_errors`). None (null) means "not reported" and is not an error.
    """
    if not isinstance(usage, dict):
        _protocol_error(rec, f"usage is not an object: {_raw(usage)}")
        return
    details = usage.get("prompt_tokens_details")
    fields: list[tuple[str, Any]] = [("prompt_tokens", usage.get("prompt_tokens")),
                                     ("completion_tokens", usage.get("completion_tokens"))]
    if details is not None and not isinstance(details, dict):
        _protocol_error(rec, f"usage.prompt_tokens_details is not an object: {_raw(details)}")
    elif isinstance(details, dict):
        fields.append(("prompt_tokens_details.cached_tokens", details.get("cached_tokens")))
    counts: dict[str, int | None] = {}
    for name, value in fields:
        counts[name] = n = usage_count(value)
        if n is None and value is not None:
            _protocol_error(rec, f"usage.{name} is not a token count (an integer 0..{MAX_USAGE_TOKENS}): "
                                 f"{_raw(value)}")
    rec.usage_prompt_tokens = counts["prompt_tokens"]
    rec.usage_completion_tokens = counts["completion_tokens"]
    rec.cached_input_tokens = counts.get("prompt_tokens_details.cached_tokens")


def _raw(value: Any) -> str:
    """The value as the server sent it (JSON), cut to 80 characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _protocol_error(rec: RequestRecord, message: str) -> None:
    """Add `message` to the request's protocol errors (once: a usage block repeated on every chunk)."""
    if rec.protocol_error is None:
        rec.protocol_error = message
    elif message not in rec.protocol_error and len(rec.protocol_error) < 1000:
        rec.protocol_error = f"{rec.protocol_error}; {message}"


def cached_tokens(usage: Any) -> int | None:
    """Prompt tokens served from the prefix cache: OpenAI's `usage.prompt_tokens_details.cached_tokens`.

    vLLM fills it only with `--enable-prompt-tokens-details` (else the details are null: None here,
    which means "not reported", not 0). On vLLM it counts whole KV blocks (128 tokens on CPU).
    """
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if not isinstance(details, dict):
        return None
    return usage_count(details.get("cached_tokens"))


def _timestamp_source(conn: _Conn, unstamped_before: int) -> str:
    """Which clock timed a request's chunks: "kernel" receive stamps, the event "loop"'s read, or both."""
    t = conn.transport
    if not isinstance(t, kstamp.KStampTransport) or not t.kernel_stamps:
        return "loop"
    return "kernel" if t.unstamped_reads == unstamped_before else "kernel+loop"


def _ssl_context(cfg: ClientConfig) -> ssl.SSLContext:
    """Verifying by default (system store, or cfg.ca_file); ALPN offers only http/1.1 (this client has no h2)."""
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if not cfg.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (lower per-chunk cost), else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
