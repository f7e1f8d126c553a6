"""Async streaming client for OpenAI-compatible /v1/completions and /v1/chat/completions.

It records raw observations (per-chunk arrival times, usage, text) into a `RequestRecord` and
never aggregates; bench/metrics.py owns every formula. Timestamps are perf_counter_ns() taken
right after the bytes that complete an SSE event are read, so parsing cost is not charged to
the server.
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
    the `data` payload of each complete event.
    """

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf + chunk
        events: list[str] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # blank line ends an event
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", errors="replace"))
                    self._data = []
                continue
            if line[:1] == b":":  # comment / keep-alive
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
                self._data.append(value)
            # other fields (event:, id:, retry:) are not used by OpenAI streams
        self._buf = buf[start:]
        return events

    def flush(self) -> list[str]:
        """Events left when the stream closes without a trailing blank line."""
        events = self.feed(b"\n\n") if self._buf or self._data else []
        self._buf = b""
        return events


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
                   scheduled_ns: int | None = None) -> RequestRecord:
        assert self._session is not None, "use `async with StreamingClient(...)`"
        body = json.dumps(self.payload(req)).encode()
        rec = RequestRecord(request_idx=idx, send_ns=0, input_tokens=req.input_len, max_tokens=req.output_len,
                            warmup=warmup, scheduled_ns=scheduled_ns)
        parser = SSEParser()
        chat = self.cfg.endpoint == "chat"
        texts: list[str] = []
        got_done = False
        rec.send_ns = time.perf_counter_ns()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                rec.http_status = resp.status
                if resp.status != 200:
                    detail = (await resp.text())[:300].replace("\n", " ")
                    rec.error = f"HTTP {resp.status}: {detail}"
                    rec.done_ns = time.perf_counter_ns()
                    return rec
                async for raw in resp.content.iter_any():
                    now = time.perf_counter_ns()
                    for data in parser.feed(raw):
                        if data == "[DONE]":
                            got_done = True
                            continue
                        self._on_event(data, now, rec, texts, chat)
                for data in parser.flush():
                    if data == "[DONE]":
                        got_done = True
                    else:
                        self._on_event(data, time.perf_counter_ns(), rec, texts, chat)
            rec.done_ns = time.perf_counter_ns()
            if rec.error is None:
                if not got_done:
                    rec.error = "stream ended without [DONE]"
                elif not rec.chunk_ns:
                    rec.error = "no content chunks"
                else:
                    rec.ok = True
        except asyncio.TimeoutError:
            rec.error = f"timeout after {self.cfg.timeout_s:g} s"
        except aiohttp.ClientError as e:
            rec.error = f"{type(e).__name__}: {e}"
        if rec.done_ns is None:
            rec.done_ns = time.perf_counter_ns()
        rec.output_text = "".join(texts)
        if self.count_tokens is not None and rec.ok:
            rec.client_output_tokens = self.count_tokens(rec.output_text)
        return rec

    @staticmethod
    def _on_event(data: str, now: int, rec: RequestRecord, texts: list[str], chat: bool) -> None:
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            rec.error = f"unparseable event: {data[:100]}"
            return
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            rec.error = f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
            return
        usage = obj.get("usage")
        if usage:
            rec.usage_prompt_tokens = usage.get("prompt_tokens")
            rec.usage_completion_tokens = usage.get("completion_tokens")
        for choice in obj.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if text:
                rec.chunk_ns.append(now)
                texts.append(text)
