"""Async streaming client for OpenAI-compatible /v1/completions and /v1/chat/completions.

It records raw observations (per-chunk arrival times, usage, text) into a `RequestRecord` and
never aggregates; bench/metrics.py owns every formula. Timestamps are perf_counter_ns() taken
right after the network read that completes an SSE event, before any parsing, so parsing cost
is never charged to the server (vLLM's client stamps after parsing each event instead).

Client starvation is recorded, not hidden: when one network read holds several content events,
the client read too late to see them apart (the server sent them at different times); they all
get that read's timestamp and `coalesced_chunks` counts the extra ones, so bench/loadgen.py can
flag a point whose ITL the client, not the server, produced.

Hot path cost per chunk: one bytes split, one json.loads, one list append (no per-chunk
tokenization). Per-chunk token counts (`chunk_tokens`) are computed after the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.metrics import RequestRecord


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


@dataclass
class StreamRecord(RequestRecord):
    """A RequestRecord plus what the client saw of its own health while reading the stream."""

    coalesced_chunks: int = 0  # content events that shared a network read with an earlier one


@dataclass
class RequestSpec:
    """One request to send: a prompt (completions) or messages (chat), with pinned output length."""

    prompt: str | None
    input_len: int
    output_len: int
    messages: list[dict[str, str]] | None = None
    prefix_id: int | None = None
    arrival_s: float | None = None  # offset from the start, for trace replay


@dataclass
class ClientConfig:
    base_url: str  # e.g. http://127.0.0.1:8000 (no /v1)
    model: str
    endpoint: str = "completions"  # or "chat"
    api_key: str | None = None  # read from an env var by the caller; never stored in results
    ignore_eos: bool = True  # vLLM extension that pins output length; providers may reject it
    temperature: float = 0.0
    timeout_s: float = 300.0
    extra_body: dict[str, Any] = field(default_factory=dict)


class StreamingClient:
    """Sends requests on one aiohttp session; one instance per load point."""

    def __init__(self, cfg: ClientConfig, count_tokens: Callable[[str], int] | None = None) -> None:
        self.cfg = cfg
        self.count_tokens = count_tokens
        self._session: aiohttp.ClientSession | None = None
        path = "/v1/chat/completions" if cfg.endpoint == "chat" else "/v1/completions"
        self.url = cfg.base_url.rstrip("/") + path
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            self.headers["Authorization"] = f"Bearer {cfg.api_key}"

    async def __aenter__(self) -> StreamingClient:
        conn = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s, sock_read=self.cfg.timeout_s)
        self._session = aiohttp.ClientSession(connector=conn, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

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

    async def send(self, idx: int, req: RequestSpec, warmup: bool = False,
                   scheduled_ns: int | None = None) -> StreamRecord:
        """Send one request and record what came back; never raises for a server or network error."""
        assert self._session is not None, "use `async with StreamingClient(...)`"
        body = json.dumps(self.payload(req)).encode()
        rec = StreamRecord(request_idx=idx, send_ns=0, input_tokens=req.input_len, max_tokens=req.output_len,
                           warmup=warmup, scheduled_ns=scheduled_ns)
        parser = SSEParser()
        chat = self.cfg.endpoint == "chat"
        texts: list[str] = []
        chunk_ns = rec.chunk_ns
        got_done = False
        coalesced = 0
        perf_ns = time.perf_counter_ns
        loads = json.loads
        rec.send_ns = perf_ns()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                rec.http_status = resp.status
                if resp.status != 200:
                    detail = (await resp.text())[:300].replace("\n", " ")
                    rec.error = f"HTTP {resp.status}: {detail}"
                    rec.done_ns = perf_ns()
                    return rec
                async for raw in resp.content.iter_any():
                    now = perf_ns()
                    n_before = len(chunk_ns)
                    for data in parser.feed_bytes(raw):
                        if data == b"[DONE]":
                            got_done = True
                            continue
                        try:
                            obj = loads(data)
                        except ValueError:
                            rec.error = f"unparseable event: {data[:100]!r}"
                            continue
                        self._on_event(obj, now, rec, texts, chat)
                    if len(chunk_ns) - n_before > 1:
                        coalesced += len(chunk_ns) - n_before - 1
                for data in parser.flush_bytes():
                    if data == b"[DONE]":
                        got_done = True
                    else:
                        try:
                            self._on_event(loads(data), perf_ns(), rec, texts, chat)
                        except ValueError:
                            rec.error = f"unparseable event: {data[:100]!r}"
            rec.done_ns = perf_ns()
            if rec.error is None:
                if not got_done:
                    rec.error = "stream ended without [DONE]"
                elif not chunk_ns:
                    rec.error = "no content chunks"
                else:
                    rec.ok = True
        except asyncio.TimeoutError:
            rec.error = f"timeout after {self.cfg.timeout_s:g} s"
        except aiohttp.ClientError as e:
            rec.error = f"{type(e).__name__}: {e}"
        if rec.done_ns is None:
            rec.done_ns = perf_ns()
        rec.coalesced_chunks = coalesced
        rec.output_text = "".join(texts)
        if self.count_tokens is not None and rec.ok:
            count = self.count_tokens
            rec.client_output_tokens = count(rec.output_text)
            rec.chunk_tokens = [count(t) for t in texts]
        return rec

    @staticmethod
    def _on_event(obj: Any, now: int, rec: RequestRecord, texts: list[str], chat: bool) -> None:
        if not isinstance(obj, dict):
            rec.error = f"unexpected event: {str(obj)[:100]}"
            return
        choices = obj.get("choices")
        if "error" in obj and not choices:
            err = obj["error"]
            rec.error = f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
            return
        usage = obj.get("usage")
        if usage:
            rec.usage_prompt_tokens = usage.get("prompt_tokens")
            rec.usage_completion_tokens = usage.get("completion_tokens")
        if choices:
            for choice in choices:
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if text:
                    rec.chunk_ns.append(now)
                    texts.append(text)
