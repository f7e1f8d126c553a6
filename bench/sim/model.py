"""Pure logic of the simulated server: configuration, token counting, output plans, schedules.

Kept apart from the aiohttp code so every rule the harness is checked against (how many tokens a
prompt has, how many tokens come back, when each chunk is due) can be tested without sockets.

Token model (exact by construction, so a client can count without a real tokenizer):
- a prompt token is one whitespace-separated word; chat prompts count the words of every message
  content (text parts only), with no chat-template overhead. A completions prompt given as a list
  of token ids counts one token per id;
- every output token is the word ``"tok"`` followed by one space, so ``"tok tok tok "`` is three
  tokens and ``len(text.split())`` counts them exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.config.base import format_validation_error
from bench.errors import UserInputError
from bench.units import ms_to_s

TOKEN_TEXT = "tok "
"""The text of one output token: one word and one space, so a whitespace split counts it once."""

UsageMode = Literal["correct", "missing", "wrong"]


class SimConfig(BaseModel):
    """How the simulated server behaves. All times are server-side, from request receipt.

    Timing: chunk ``i`` (0-based) of a stream is due at ``slot + ttft + i * itl`` where ``slot`` is
    when the request got a stream slot (so FIFO queue time adds to the client's TTFT). Deadlines
    are absolute, never accumulated sleeps, so scheduler lateness does not build up over a stream.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("sim-model", description="Model id served by /v1/models (requests may name any).")
    ttft_ms: float = Field(50.0, ge=0, description="Time from getting a slot to the first content chunk.")
    prefill_ms_per_token: float = Field(
        0.0, ge=0, description="Extra TTFT per prompt token (a crude prefill cost; 0 = flat TTFT)."
    )
    itl_ms: float = Field(10.0, ge=0, description="Gap between consecutive content chunks.")
    tokens_per_chunk: int = Field(1, ge=1, description="Tokens per content chunk (the last may carry fewer).")
    output_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Where the simulated model emits EOS (finish_reason 'stop'). None = never: the output is "
            "max_tokens long (finish_reason 'length'). Requests with ignore_eos=true always get max_tokens."
        ),
    )
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when the request gives none.")
    jitter_ms: float = Field(
        0.0, ge=0, description="TTFT and every inter-chunk gap get an independent uniform [-j, +j] ms offset."
    )
    seed: int = Field(0, description="Seeds jitter and fault injection (per-request draws in arrival order).")
    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests answered HTTP 500 at once.")
    cut_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of requests whose connection drops after half their chunks."
    )
    usage_mode: UsageMode = Field(
        "correct", description="correct | missing (no usage reported) | wrong (completion_tokens off by N)."
    )
    usage_offset_tokens: int = Field(1, description="N for usage_mode=wrong (may be negative).")
    max_concurrent_streams: int | None = Field(
        None, ge=1, description="Requests served at once; more wait in a FIFO queue. None = unlimited."
    )
    ping: bool = Field(False, description="Send an SSE comment ': ping' half-way through every wait.")
    spin_ms: float = Field(
        2.0,
        ge=0,
        description=(
            "The last spin_ms of every wait is a precise blocking sleep instead of an event-loop timer. "
            "Event-loop timers wake 0.2-1.4 ms late (epoll's 1 ms granularity, rounded up; measured on "
            "the CI machine), time.sleep about 0.1 ms: chunk times become sub-millisecond exact. "
            "0 = plain timers only (the loop never blocks)."
        ),
    )

    @model_validator(mode="after")
    def _check_rates(self) -> SimConfig:
        if self.error_rate + self.cut_rate > 1:
            raise ValueError("error_rate + cut_rate must be at most 1")
        return self


def sim_config_from_options(**options: Any) -> SimConfig:
    """Build a SimConfig from CLI-style keyword options; bad values become one-line UserInputErrors."""
    try:
        return SimConfig(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        line = format_validation_error("sim", e, sep=" ", top_level="sim", raw=True, more=False)
        raise UserInputError(line) from None


class BadRequest(ValueError):
    """The request body is not something an OpenAI-compatible server would accept (-> HTTP 400)."""


def count_words(text: str) -> int:
    """Whitespace-separated words: the sim's tokenizer."""
    return len(text.split())


def prompt_tokens_completions(prompt: Any) -> int:
    """Prompt tokens of a /v1/completions request: words of a string, or one per token id."""
    if isinstance(prompt, str):
        return count_words(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        if len(prompt) == 1:
            return prompt_tokens_completions(prompt[0])
        raise BadRequest("prompt: the simulator serves one prompt per request (string or token ids)")
    raise BadRequest("prompt: required, a string or a list of token ids")


def prompt_tokens_chat(messages: Any) -> int:
    """Prompt tokens of a chat request: words of all message contents (no template tokens)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: required, a non-empty list")
    total = 0
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("messages: every message must be an object")
        content = m.get("content")
        if isinstance(content, str):
            total += count_words(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += count_words(part["text"])
        elif content is not None:
            raise BadRequest("messages: content must be a string or a list of parts")
    return total


def plan_output(cfg: SimConfig, max_tokens: int, ignore_eos: bool) -> tuple[int, str]:
    """Number of output tokens and the finish_reason, like a model that stops at cfg.output_tokens."""
    if cfg.output_tokens is not None and not ignore_eos and cfg.output_tokens <= max_tokens:
        return cfg.output_tokens, "stop"
    return max_tokens, "length"


def chunk_sizes(n_tokens: int, tokens_per_chunk: int) -> list[int]:
    """Tokens per content chunk: full chunks of k, the remainder (if any) in the last one."""
    full, rest = divmod(n_tokens, tokens_per_chunk)
    return [tokens_per_chunk] * full + ([rest] if rest else [])


def chunk_offsets_s(
    cfg: SimConfig, n_chunks: int, prompt_tokens: int, rng: random.Random | None
) -> list[float]:
    """When each content chunk is due, in seconds after the request got its stream slot.

    Without jitter: ``ttft + i * itl`` exactly. With jitter, TTFT and each gap get an independent
    uniform offset (gaps clipped at 0); the offsets are still absolute from the slot time.
    """
    ttft_s = ms_to_s(cfg.ttft_ms + cfg.prefill_ms_per_token * prompt_tokens)
    itl_s = ms_to_s(cfg.itl_ms)
    if cfg.jitter_ms <= 0 or rng is None:
        return [ttft_s + i * itl_s for i in range(n_chunks)]
    j_s = ms_to_s(cfg.jitter_ms)
    out: list[float] = []
    t = max(0.0, ttft_s + rng.uniform(-j_s, j_s))
    for i in range(n_chunks):
        if i:
            t += max(0.0, itl_s + rng.uniform(-j_s, j_s))
        out.append(t)
    return out


def usage_block(cfg: SimConfig, prompt_tokens: int, completion_tokens: int) -> dict[str, int] | None:
    """The `usage` object as this server reports it (None when usage_mode is 'missing')."""
    if cfg.usage_mode == "missing":
        return None
    reported = completion_tokens
    if cfg.usage_mode == "wrong":
        reported = max(0, completion_tokens + cfg.usage_offset_tokens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": reported,
        "total_tokens": prompt_tokens + reported,
    }


@dataclass(frozen=True)
class Fate:
    """What the injected faults do to one request."""

    error: bool
    cut: bool


def draw_fate(cfg: SimConfig, rng: random.Random) -> Fate:
    """One uniform draw per request: [0, error_rate) -> 500, next cut_rate of the range -> cut."""
    u = rng.random()
    return Fate(error=u < cfg.error_rate, cut=cfg.error_rate <= u < cfg.error_rate + cfg.cut_rate)


def request_rng(cfg: SimConfig, index: int) -> random.Random:
    """A per-request RNG: same seed and arrival order give the same jitter and faults."""
    return random.Random(cfg.seed * 1_000_003 + index)


def told_request_metrics(cfg: SimConfig, output_tokens: int, prompt_tokens: int = 0) -> dict[str, float | None]:
    """What an exact client must measure for one request that did not queue (jitter_ms = 0).

    With n tokens in c = ceil(n / k) chunks: TTFT = ttft (+ prefill), E2EL = TTFT + (c - 1) * itl,
    every ITL gap = itl (c - 1 gaps, each carrying k tokens), and vLLM's
    TPOT = (E2EL - TTFT) / (n - 1), None for n = 1. For golden accuracy tables ("told vs measured").
    """
    n_chunks = len(chunk_sizes(output_tokens, cfg.tokens_per_chunk))
    ttft_ms = cfg.ttft_ms + cfg.prefill_ms_per_token * prompt_tokens
    e2el_ms = ttft_ms + (n_chunks - 1) * cfg.itl_ms
    return {
        "ttft_ms": ttft_ms,
        "e2el_ms": e2el_ms,
        "tpot_ms": (e2el_ms - ttft_ms) / (output_tokens - 1) if output_tokens > 1 else None,
        "itl_ms": cfg.itl_ms if n_chunks > 1 else None,
        "n_chunks": float(n_chunks),
        "output_tokens": float(output_tokens),
    }


class Pacer(Protocol):
    """Token times from outside the server's own rules: `maas-bench sim --virtual` hands in the scheduler
    simulation run in real time (bench.planner.pacer), so the real client measures a GPU that is not at hand.
    The server knows only this protocol (the simulation lives in a higher layer)."""

    def refuse(self, prompt_tokens: int, output_tokens: int) -> str | None:
        """Why the engine would refuse this request (answered HTTP 400), or None."""

    def token_times(self, prompt_tokens: int, output_tokens: int) -> AsyncIterator[tuple[float, int]]:
        """(event-loop time, tokens) of every engine step that emitted tokens of this request, as they end."""

    def close(self) -> None:
        """Stop whatever runs on the server's loop (called when the app shuts down)."""


async def offset_deadlines(slot_t: float, offsets: list[float]) -> AsyncIterator[float]:
    """The server's own timing: chunk i is due at slot + offset i (`chunk_offsets_s`)."""
    for o in offsets:
        yield slot_t + o


async def paced_deadlines(pacer: Pacer, prompt_tokens: int, sizes: list[int]) -> AsyncIterator[float]:
    """A pacer's timing: chunk i is due when the engine step that emitted its last token ends."""
    times = pacer.token_times(prompt_tokens, sum(sizes))
    got = need = 0
    t = 0.0
    for size in sizes:
        need += size
        while got < need:
            t, n = await anext(times)
            got += n
        yield t


class FifoSlots:
    """Counting semaphore that admits strictly in arrival order (the sim's capacity model)."""

    def __init__(self, capacity: int) -> None:
        self.free = capacity
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over directly: no barging past the queue
                return
        self.free += 1
