"""The client's transport: a minimal HTTP/1.1 response parser on an asyncio Protocol, and SSE parsing.

Why not aiohttp (see bench.measure.client): the arrival timestamp is taken at the top of
`data_received`, the first Python code that sees the bytes, and a chunk then costs one callback. On plain
TCP under Linux the stamp is the kernel's receive time instead (bench.measure.kstamp calls `received_at`).
This module holds only the byte-level parts (connection, response framing, SSE events); what a
request sends and records is bench.measure.client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable

_JSON = json.JSONDecoder()  # its .decode(str) skips json.loads' per-call type and encoding checks


class SSEParser:
    """Incremental Server-Sent-Events parser.

    Survives events split across network reads (and reads holding several events), CRLF line
    ends, comment / keep-alive lines (starting with ':'), and multi-line `data:` fields. Returns
    the `data` payload of each complete event (`feed` as str, `feed_bytes` as bytes, which
    json.loads takes directly). An incomplete event stays buffered until its blank line comes.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed_bytes(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # a trailing lone \r stays: its \n may come with the next read
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2:]
        out: list[bytes] = []
        for block in buf[:end].split(b"\n\n"):
            if block[:6] == b"data: " and b"\n" not in block:  # the common one-line event
                out.append(block[6:])
                continue
            data = []
            for line in block.split(b"\n"):
                if line[:5] == b"data:":
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                # blank, comment (':') and other fields (event:, id:, retry:) carry no data
            if data:
                out.append(b"\n".join(data))
        return out

    def feed(self, chunk: bytes) -> list[str]:
        return [e.decode("utf-8", errors="replace") for e in self.feed_bytes(chunk)]

    def flush(self) -> list[str]:
        """Events left when the stream closes without a trailing blank line."""
        events = self.feed(b"\n\n") if self._buf else []
        self._buf = b""
        return events

    def flush_bytes(self) -> list[bytes]:
        events = self.feed_bytes(b"\n\n") if self._buf else []
        self._buf = b""
        return events


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; hands received bytes, stamped on arrival, to its response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        """asyncio's transports (TLS, or no kernel stamps): the bytes are timed when the loop reads them."""
        self.received_at(time.perf_counter_ns(), data)

    def received_at(self, now: int, data: bytes) -> None:
        """Bytes that arrived at `now` (perf_counter_ns): bench.measure.kstamp passes the kernel's receive stamp."""
        r = self.response
        if r is not None:
            try:  # free on Python >= 3.11 unless it raises
                r.feed(now, data)
            except Exception as e:  # a response the parser did not expect: fail the request, not the loop
                r._fail(ConnectionError(f"unreadable response: {type(e).__name__}: {e}"))
                if self.transport is not None:
                    self.transport.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        r = self.response
        if r is not None:
            r.closed(exc)


_HEAD, _BODY = 0, 1


class _Response:
    """Incremental parser of one HTTP/1.1 response: status and headers, then a chunked,
    Content-Length or read-until-close body. Body bytes of a 200 go through SSE parsing; every
    event of one network read gets that read's arrival time."""

    __slots__ = ("fut", "on_events", "state", "buf", "status", "chunked", "remaining", "need", "keep_alive",
                 "sse", "error_body", "got_bytes", "complete", "content_type", "location", "is_sse")

    def __init__(self, fut: asyncio.Future[None], on_events: Callable[[int, list[bytes]], None]) -> None:
        self.fut = fut
        self.on_events = on_events
        self.state = _HEAD
        self.buf = b""
        self.status = 0
        self.chunked = False
        self.remaining: int | None = None  # Content-Length left; None = until close (if not chunked)
        self.need = -1  # chunked: bytes left in this chunk; -1 size line, -2 CRLF after data, -3 trailers
        self.keep_alive = True
        self.sse = SSEParser()
        self.error_body = b""  # body of a non-200 or non-SSE response, for the error message
        self.got_bytes = False
        self.complete = False
        self.content_type = b""
        self.location = b""
        self.is_sse = True  # a 200 whose body goes through SSE parsing

    def feed(self, now: int, data: bytes) -> None:
        self.got_bytes = True
        if self.state == _HEAD:
            buf = self.buf + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                self._headers(buf[:end])
                buf = buf[end + 4:]
                if not 100 <= self.status < 200:
                    break
                self._reset_head()  # an interim 1xx response (100 Continue, 103 Early Hints): the real one follows
            self.buf = b""
            data = buf
            self.state = _BODY
            if self.fut.done():  # _headers failed the response
                return
            if self.remaining == 0:
                self._finish(now)
                return
            if not data:
                return
        if self.chunked:
            self._chunked(now, data)
        else:
            if self.remaining is not None:
                data = data[:self.remaining]
                self.remaining -= len(data)
            self._body(now, data)
            if self.remaining == 0:
                self._finish(now)

    def _reset_head(self) -> None:
        self.status = 0
        self.chunked = False
        self.remaining = None
        self.keep_alive = True
        self.content_type = self.location = b""

    def _headers(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            self.status = int(parts[1])
        except (IndexError, ValueError):
            self._fail(ConnectionError(f"bad HTTP status line {lines[0][:80]!r}"))
            return
        http10 = parts[0] == b"HTTP/1.0"
        self.keep_alive = not http10  # HTTP/1.0 closes after the response unless it says keep-alive
        for line in lines[1:]:
            name, _, raw = line.partition(b":")
            name, value = name.strip().lower(), raw.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.chunked = True
            elif name == b"content-length":
                try:
                    self.remaining = int(value)
                except ValueError:
                    self._fail(ConnectionError(f"bad Content-Length {raw.strip()[:40]!r}"))
                    return
            elif name == b"connection":
                tokens = {t.strip() for t in value.split(b",")}
                if b"close" in tokens:
                    self.keep_alive = False
                elif http10 and b"keep-alive" in tokens:
                    self.keep_alive = True
            elif name == b"content-type":
                self.content_type = value
            elif name == b"location":
                self.location = raw.strip()
        if self.chunked:
            self.remaining = None
        elif self.remaining is None:
            self.keep_alive = False  # body ends when the server closes
        # A JSON or HTML 200 (stream=true ignored, a proxy's page) is not SSE: keep it for the error message.
        ctype = self.content_type
        self.is_sse = self.status == 200 and not (b"json" in ctype or b"html" in ctype)

    def _chunked(self, now: int, data: bytes) -> None:
        if self.need == -1 and not self.buf:  # fast path: the read is exactly one whole chunk (the usual case)
            j = data.find(b"\r\n")
            if 0 < j < 9:
                try:
                    size = int(data[:j], 16)
                except ValueError:
                    size = -1
                if size > 0 and len(data) == j + size + 4 and data[-2:] == b"\r\n":
                    self._body(now, data[j + 2:j + 2 + size])
                    return
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        parts: list[bytes] = []
        done = False
        while pos < n:
            need = self.need
            if need > 0:
                take = min(need, n - pos)
                parts.append(buf[pos:pos + take])
                pos += take
                self.need = need - take or -2
            elif need == -1 or need == -3:
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    break
                line = buf[pos:j]
                pos = j + 2
                if need == -3:  # trailers end with an empty line
                    if not line:
                        done = True
                        break
                    continue
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    self._fail(ConnectionError(f"bad chunk size line {line[:40]!r}"))
                    return
                self.need = size if size else -3
            else:  # -2: the CRLF that closes a chunk's data
                if n - pos < 2:
                    break
                pos += 2
                self.need = -1
        self.buf = b"" if done else buf[pos:]
        if parts:
            self._body(now, parts[0] if len(parts) == 1 else b"".join(parts))
        if done:
            self._finish(now)

    def _body(self, now: int, data: bytes) -> None:
        if not self.is_sse:
            if len(self.error_body) < 65536:
                self.error_body += data
            return
        events = self.sse.feed_bytes(data)
        if events:
            self.on_events(now, events)

    def _finish(self, now: int | None = None) -> None:
        if self.is_sse:
            rest = self.sse.flush_bytes()
            if rest:
                self.on_events(now if now is not None else time.perf_counter_ns(), rest)
        self.complete = True
        if not self.fut.done():
            self.fut.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        if not self.fut.done():
            self.fut.set_exception(exc)

    def closed(self, exc: Exception | None) -> None:
        if self.complete:
            return
        if self.state == _BODY and not self.chunked and self.remaining is None:
            self._finish()  # a read-until-close body ended normally
            return
        why = f": {exc}" if exc else ""
        self._fail(ConnectionResetError(f"connection closed before the response ended{why}"))
