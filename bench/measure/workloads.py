"""Request generators: prompts sized exactly in tokens, output lengths pinned, seeded.

Why exact: a benchmark that asks for 1024 input tokens and sends 1031 measures the wrong point
of the curve, and its $/M-input-token figure is off by the same amount. So every prompt is built
to a token count *with the model's tokenizer*, and the e2e test checks the request's length
against the server's `usage.prompt_tokens`.

Two ways to size a prompt (`PromptFactory`):
- word-level tokenizers (the ones `bench.engines.modeldir` materializes: one whitespace-separated word
  is one token): join N vocabulary words. Exact by construction, no encoding needed.
- any other tokenizer (BPE, unigram, ...): draw N random non-special token ids, decode, re-encode
  the text (decoding and re-encoding is not the identity: "calls"+"here" may come back as
  "call"+"sh"+"ere"), then trim or pad the token list to the target and repeat until the
  re-encoded count is exactly the target. A prompt that cannot be fitted raises instead of
  silently sending a different length.
For the chat endpoint the server wraps the content in the chat template, so the content is made
`chat_overhead_tokens` shorter (measured once by rendering the template) and the requested
input length is still what the server counts.

Length semantics (input_len / output_len are L below):
- fixed: every request has input_len / output_len.
- ranged: uniform integers in [floor(L(1-r)), ceil(L(1+r))], centred on L, as vLLM's benchmark
  `random` dataset does with `--random-range-ratio r` (lower bound at least 1). InferenceX's
  ranged ISL/OSL instead draws from [rL, L]: never longer than L, mean L(1+r)/2, so its "r=0.8"
  point is shorter on average than ours and vLLM's, whose mean is L.
- chat: lognormal lengths with median input_len / output_len and shape input_sigma /
  output_sigma (config), clipped to [1, 8 x median]. sigma 0.8 gives a mean 1.38x the median
  and a long right tail, like chat traffic.
- prefix (coding agents, prefix caching): every prompt is a prefix of prefix_len (P) tokens and
  a unique suffix of input_len (S) tokens, so every request has P + S input tokens. With
  probability reuse_ratio the prefix is one of num_prefixes shared prefixes (used round-robin),
  otherwise it is a fresh random one. Lengths therefore do not depend on reuse_ratio, and only
  the cache behaviour does: after each shared prefix is first seen, the ideal prefix-cache hit
  rate is reuse_ratio x P / (P + S) (block granularity lowers it a little).
- trace: JSONL rows {"timestamp": s, "input_len": n, "output_len": m, "prefix_id": optional},
  replayed in timestamp order. input_len is the whole prompt; with a prefix_id its first
  min(prefix_len, input_len - 1) tokens are a prefix shared by every row with that id.
  `arrival_s` carries the timestamp (relative to the first row) to bench.measure.loadgen.
- mooncake: the public Mooncake trace format (FAST'25, github.com/kvcache-ai/Mooncake, also replayed
  by AIPerf and GuideLLM): JSONL rows {"timestamp": ms, "input_length": n, "output_length": m,
  "hash_ids": [ints]}. Block i of a prompt (block_tokens = 512 tokens each) is the token block of
  hash_ids[i]: equal hash ids give identical blocks (the same words, seeded by seed and the id), so
  two rows sharing their first k hash ids share a k x 512-token prefix exactly, which is what a
  prefix cache sees. A last partial block is the first tokens of its hash's block; blocks beyond
  hash_ids are fresh random tokens. Exact in tokens for word-level tokenizers; a subword tokenizer
  can merge tokens across a block boundary, so there the reuse is exact only up to that token.
- multiturn (agentic sessions): a session has `turns` turns (uniform in [T(1-r), T(1+r)], r =
  turns_range_ratio); turn t adds a user message of input_len new tokens and asks for output_len
  tokens (both ranged by range_ratio), after a think time (think_time_s: fixed, or exponential with
  that mean). Every turn resends the whole conversation: an optional system prompt of
  system_prompt_len tokens (the same text for every session of the workload), then each earlier
  user message and the answer the server actually returned, then the new user message. On the
  completions endpoint the client renders the model's chat template itself (as transformers does),
  so the prompt's tokens are exactly: turn t-1's prompt + turn t-1's answer + the template's closing
  of the answer + the new user message + the generation prompt. The answer is folded back as the
  text the server streamed (whitespace-stripped); with a word-level tokenizer that text re-encodes
  to the same tokens, with a subword tokenizer it can re-encode differently (as in a real chat
  client, which also resends text, not ids). The chat endpoint sends the messages and lets the server
  render them. Sessions are `Session` objects; bench.measure.loadgen runs their turns in order
  (closed-loop concurrency = live sessions, open-loop rate = session starts).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from bench.config.sweep import WorkloadSpec
from bench.engines.modeldir import SPECIAL_TOKENS, vocabulary
from bench.errors import UserInputError
from bench.measure.client import RequestSpec

log = logging.getLogger(__name__)

CHAT_PROBE = "ba be bi bo bu"  # content used to measure the chat template's token overhead
_FIT_ROUNDS = 16  # trim/pad rounds per attempt when fitting a prompt with a subword tokenizer
_FIT_ATTEMPTS = 8  # fresh random starts before giving up


class PromptFactory:
    """Makes prompts of an exact token count.

    `PromptFactory(words)` joins single-token words (exact for word-level tokenizers);
    `PromptFactory.from_tokenizer(tok)` works with any tokenizer by encode / trim / pad.
    """

    def __init__(self, words: list[str], count_tokens: Callable[[str], int] | None = None,
                 chat_overhead_tokens: int = 0) -> None:
        if not words:
            raise ValueError("empty vocabulary")
        self.words = words
        self.count_tokens = count_tokens
        self.chat_overhead_tokens = chat_overhead_tokens
        self.chat_template: str | None = None  # the model's template (multiturn renders it client-side)
        self.special: dict[str, Any] = {}  # bos/eos token strings the template may use
        self._encode: Callable[[str], list[int]] | None = None
        self._decode: Callable[[list[int]], str] | None = None
        self._allowed: list[int] = []

    @classmethod
    def for_vocab_size(cls, vocab_size: int, chat_overhead_tokens: int = 0) -> PromptFactory:
        """Word prompts for the word-level vocabulary bench.engines.modeldir builds for `vocab_size`."""
        return cls([w for w in vocabulary(vocab_size) if w not in SPECIAL_TOKENS],
                   chat_overhead_tokens=chat_overhead_tokens)

    @classmethod
    def from_tokenizer(cls, tok: Any, chat_overhead_tokens: int = 0) -> PromptFactory:
        """A factory for any `tokenizers.Tokenizer` or transformers tokenizer.

        Word-level tokenizers with whitespace splitting take the exact word path; everything
        else is fitted by encode / trim / pad.
        """
        encode, decode = _codec(tok)
        specials = _special_ids(tok)
        vocab = _vocab(tok)
        if _is_word_level(tok):
            words = [w for w, i in sorted(vocab.items(), key=lambda kv: kv[1])
                     if i not in specials and w.isalnum()]
            if words:
                f = cls(words, count_tokens=lambda t: len(encode(t)), chat_overhead_tokens=chat_overhead_tokens)
                probe = f.make(64, random.Random(0))
                if len(encode(probe)) == 64:  # the pre-tokenizer really splits on whitespace only
                    return f
        f = cls(["?"], count_tokens=lambda t: len(encode(t)), chat_overhead_tokens=chat_overhead_tokens)
        f._encode, f._decode = encode, decode
        f._allowed = sorted(i for i in vocab.values() if i not in specials)
        if not f._allowed:
            raise ValueError("tokenizer has no non-special tokens")
        return f

    @classmethod
    def for_model_dir(cls, model_dir: str | Path) -> PromptFactory | None:
        """A factory from a local model dir's tokenizer.json (+ chat template); None if it has none."""
        path = Path(model_dir)
        if not (path / "tokenizer.json").is_file():
            return None
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        template = None
        cfg_file = path / "tokenizer_config.json"
        cfg: dict[str, Any] = {}
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            template = cfg.get("chat_template")
        encode, _ = _codec(tok)
        overhead = chat_overhead_tokens(template, encode, cfg) if isinstance(template, str) else 0
        f = cls.from_tokenizer(tok, chat_overhead_tokens=overhead)
        f.chat_template = template if isinstance(template, str) else None
        f.special = cfg
        return f

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt the server would build from `messages` (generation prompt added).

        The model's chat template rendered as transformers does; without a template, the contents
        joined by spaces (so appending messages still appends text).
        """
        if self.chat_template is None:
            return " ".join(m["content"] for m in messages)
        return _render_template(self.chat_template, messages, self.special)

    @property
    def word_level(self) -> bool:
        return self._encode is None

    def make(self, n_tokens: int, rng: random.Random, prefix: str | None = None) -> str:
        """A prompt of `prefix` (if any) followed by text worth exactly `n_tokens` more tokens."""
        if n_tokens < 1:
            raise ValueError("n_tokens must be >= 1")
        if self._encode is None:
            body = " ".join(rng.choices(self.words, k=n_tokens))
            return f"{prefix} {body}" if prefix else body
        return self._fit(n_tokens, rng, prefix)

    def count(self, text: str) -> int | None:
        """Tokens in `text` by this factory's tokenizer (None when it has none)."""
        return self.count_tokens(text) if self.count_tokens is not None else None

    def _fit(self, n_tokens: int, rng: random.Random, prefix: str | None) -> str:
        assert self._encode is not None and self._decode is not None
        encode, decode = self._encode, self._decode
        base = len(encode(prefix)) if prefix else 0
        target = base + n_tokens
        for _ in range(_FIT_ATTEMPTS):
            ids = rng.choices(self._allowed, k=n_tokens)
            for _ in range(_FIT_ROUNDS):
                body = decode(ids)
                text = f"{prefix} {body}" if prefix else body
                diff = target - len(encode(text))
                if diff == 0:
                    return text
                body_ids = encode(body)
                if diff > 0:
                    ids = body_ids + rng.choices(self._allowed, k=diff)
                else:
                    ids = body_ids[:max(1, len(body_ids) + diff)]
        raise RuntimeError(f"could not build a prompt of exactly {n_tokens} tokens with this tokenizer")


def _render_template(template: str, messages: list[dict[str, str]], special: dict[str, Any]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True,
        bos_token=special.get("bos_token") or "", eos_token=special.get("eos_token") or "")


def chat_overhead_tokens(template: str, encode: Callable[[str], list[int]], special: dict[str, Any]) -> int:
    """Tokens the chat template adds around one user message (with the generation prompt).

    Rendered with jinja2 the way transformers does (trim_blocks, lstrip_blocks); 0 if the
    template cannot be rendered (then chat prompts come out longer by the template's tokens,
    which the server's usage.prompt_tokens still reports).
    """
    try:
        text = _render_template(template, [{"role": "user", "content": CHAT_PROBE}], special)
    except Exception as e:  # an exotic template: fall back to no correction
        log.warning("chat template could not be rendered (%s); chat prompts are not corrected", e)
        return 0
    return max(0, len(encode(text)) - len(encode(CHAT_PROBE)))


def _codec(tok: Any) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """(encode without special tokens -> ids, decode ids -> text) for either tokenizer family."""
    probe = tok.encode("a", add_special_tokens=False)
    if hasattr(probe, "ids"):  # tokenizers.Tokenizer -> Encoding
        return (lambda t: tok.encode(t, add_special_tokens=False).ids,
                lambda ids: tok.decode(ids, skip_special_tokens=False))
    return (lambda t: list(tok.encode(t, add_special_tokens=False)),
            lambda ids: tok.decode(ids, skip_special_tokens=False))


def _vocab(tok: Any) -> dict[str, int]:
    get = getattr(tok, "get_vocab", None)
    if get is None:
        raise ValueError("tokenizer has no get_vocab()")
    try:
        return dict(get(with_added_tokens=True))
    except TypeError:
        return dict(get())


def _special_ids(tok: Any) -> dict[int, str]:
    """Ids never put in a prompt: special and added tokens."""
    out: dict[int, str] = {}
    added = getattr(tok, "get_added_tokens_decoder", None)
    if callable(added):
        for i, t in added().items():
            out[int(i)] = str(getattr(t, "content", t))
    for i in getattr(tok, "all_special_ids", None) or ():
        out[int(i)] = str(i)
    return out


def _is_word_level(tok: Any) -> bool:
    model = getattr(tok, "model", None)
    if model is None and hasattr(tok, "backend_tokenizer"):  # transformers fast tokenizer
        model = tok.backend_tokenizer.model
    return type(model).__name__ == "WordLevel"


def ranged_len(rng: random.Random, length: int, ratio: float) -> int:
    """Uniform integer in [floor(L(1-r)), ceil(L(1+r))], at least 1 (vLLM's `random` dataset)."""
    lo = max(1, math.floor(length * (1 - ratio)))
    hi = max(lo, math.ceil(length * (1 + ratio)))
    return rng.randint(lo, hi)


def lognormal_len(rng: random.Random, median: int, sigma: float) -> int:
    """Lognormal integer with the given median and shape, clipped to [1, 8 x median]."""
    x = int(round(rng.lognormvariate(math.log(median), sigma)))
    return min(max(1, x), 8 * median)


def _spec_for(factory: PromptFactory, spec: WorkloadSpec, isl: int, osl: int, rng: random.Random,
              prefix: str | None = None, prefix_tokens: int = 0, prefix_id: int | None = None,
              arrival_s: float | None = None) -> RequestSpec:
    """One request whose server-side prompt length is `isl` (chat template included)."""
    overhead = factory.chat_overhead_tokens if spec.endpoint == "chat" else 0
    body = max(1, isl - prefix_tokens - overhead)
    prompt = factory.make(body, rng, prefix)
    return RequestSpec(prompt=prompt, input_len=prefix_tokens + body + overhead, output_len=osl,
                       prefix_id=prefix_id, arrival_s=arrival_s)


def iter_requests(spec: WorkloadSpec, factory: PromptFactory, seed_offset: int = 0) -> Iterator[RequestSpec]:
    """Requests of a workload, lazily; endless except for a trace. Same spec and seed, same requests."""
    rng = random.Random(spec.seed * 1_000_003 + seed_offset)
    if spec.kind == "trace":
        yield from _trace(spec, factory, rng)
        return
    if spec.kind == "mooncake":
        yield from _mooncake(spec, factory, rng)
        return
    if spec.kind == "multiturn":
        yield from iter_sessions(spec, factory, seed_offset)  # type: ignore[misc]
        return
    shared: list[str] = []
    if spec.kind == "prefix":
        # The shared prefixes depend on the seed only, so warm-up, measured and cool-down
        # streams (different seed offsets) share them, as a real prompt cache would see.
        prng = random.Random(spec.seed * 1_000_003 - 1)
        shared = [factory.make(spec.prefix_len, prng) for _ in range(spec.num_prefixes)]
    reused = 0
    while True:
        if spec.kind == "ranged":
            isl, osl = ranged_len(rng, spec.input_len, spec.range_ratio), ranged_len(rng, spec.output_len,
                                                                                      spec.range_ratio)
        elif spec.kind == "chat":
            isl = lognormal_len(rng, spec.input_len, spec.input_sigma)
            osl = lognormal_len(rng, spec.output_len, spec.output_sigma)
        else:  # fixed, prefix
            isl, osl = spec.input_len, spec.output_len
        if spec.kind != "prefix":
            yield _spec_for(factory, spec, isl, osl, rng)
            continue
        if rng.random() < spec.reuse_ratio:
            pid: int | None = reused % spec.num_prefixes
            reused += 1
            prefix = shared[pid]
        else:
            pid, prefix = None, factory.make(spec.prefix_len, rng)
        yield _spec_for(factory, spec, spec.prefix_len + isl, osl, rng, prefix, spec.prefix_len, pid)


def generate(spec: WorkloadSpec, n: int, factory: PromptFactory, seed_offset: int = 0) -> list[RequestSpec]:
    """The first `n` requests of `iter_requests` (fewer if a trace has fewer rows)."""
    return list(islice(iter_requests(spec, factory, seed_offset), n))


def _trace_lines(path: str | None) -> Iterator[tuple[int, str]]:
    """(line number, line) of a JSONL trace's non-blank lines; a missing file is a user error."""
    if not path or not Path(path).is_file():
        raise UserInputError(f"workload.trace_path: no such file {path!r}")
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            yield lineno, line


def read_trace(path: str | None) -> list[tuple[float, int, int, int | None]]:
    """(timestamp_s, input_len, output_len, prefix_id) rows of a JSONL trace, sorted by time."""
    rows = []
    for lineno, line in _trace_lines(path):
        try:
            row = json.loads(line)
            ts, isl, osl = float(row["timestamp"]), int(row["input_len"]), int(row["output_len"])
            pid = row.get("prefix_id")
            pid = None if pid is None else int(pid)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserInputError(f"{path}:{lineno}: need timestamp, input_len, output_len ({e})") from None
        if isl < 1 or osl < 1 or not math.isfinite(ts):
            raise UserInputError(f"{path}:{lineno}: input_len and output_len must be >= 1, timestamp finite")
        rows.append((ts, isl, osl, pid))
    if not rows:
        raise UserInputError(f"workload.trace_path: {path} has no rows")
    rows.sort(key=lambda r: r[0])
    return rows


def _trace(spec: WorkloadSpec, factory: PromptFactory, rng: random.Random) -> Iterator[RequestSpec]:
    rows = read_trace(spec.trace_path)
    t0 = rows[0][0]
    prefixes: dict[tuple[int, int], str] = {}
    for ts, isl, osl, pid in rows:
        if pid is None or isl < 2:
            yield _spec_for(factory, spec, isl, osl, rng, arrival_s=ts - t0)
            continue
        p_len = min(spec.prefix_len, isl - 1)
        key = (pid, p_len)
        if key not in prefixes:  # same (seed, id) -> same words, so shorter cuts share the start
            prefixes[key] = factory.make(p_len, random.Random(spec.seed * 1_000_003 + 7919 * (pid + 1)))
        yield _spec_for(factory, spec, isl, osl, rng, prefixes[key], p_len, pid, arrival_s=ts - t0)


# --- Mooncake traces ---------------------------------------------------------------------------

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


def read_mooncake(path: str | None) -> list[tuple[float, int, int, list[int]]]:
    """(timestamp_s, input_length, output_length, hash_ids) rows of a Mooncake JSONL trace, by time.

    Mooncake timestamps are milliseconds; they come back in seconds. Every row must have all four
    fields, lengths >= 1 and hash_ids a list of integers: anything else is one line naming the file
    and line (exit 2), before any server starts.
    """
    rows = []
    for lineno, line in _trace_lines(path):
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except ValueError:
            raise UserInputError(f"{where}: not a JSON object") from None
        if not isinstance(row, dict):
            raise UserInputError(f"{where}: not a JSON object")
        missing = [f for f in MOONCAKE_FIELDS if f not in row]
        if missing:
            raise UserInputError(f"{where}: missing field(s) {', '.join(missing)}; a Mooncake row needs "
                                 f"{', '.join(MOONCAKE_FIELDS)}")
        ts, isl, osl, ids = (row[f] for f in MOONCAKE_FIELDS)
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise UserInputError(f"{where}: hash_ids must be a list of integers (got {str(ids)[:60]})")
        for name, v in (("input_length", isl), ("output_length", osl)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserInputError(f"{where}: {name} must be an integer >= 1 (got {v!r})")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise UserInputError(f"{where}: timestamp must be a finite number of milliseconds (got {ts!r})")
        rows.append((float(ts) / 1000.0, isl, osl, ids))
    if not rows:
        raise UserInputError(f"workload.trace_path: {path} has no rows")
    rows.sort(key=lambda r: r[0])
    return rows


def block_text(factory: PromptFactory, hash_id: int, n_tokens: int, block_tokens: int, seed: int) -> str:
    """The first `n_tokens` of the token block of `hash_id`: the same text for the same (seed, id).

    Word-level: a cut of one fixed word list, so a partial block is a prefix of the full one.
    """
    rng = random.Random(seed * 1_000_003 + 15_485_863 * (hash_id + 1))
    if factory.word_level:
        return " ".join(rng.choices(factory.words, k=block_tokens)[:n_tokens])
    return factory.make(n_tokens, rng)


def mooncake_prompt(factory: PromptFactory, isl: int, hash_ids: list[int], block_tokens: int, seed: int,
                    rng: random.Random) -> str:
    """A prompt of `isl` tokens whose i-th block is hash_ids[i]'s block (fresh tokens past the list)."""
    parts = []
    for i in range(math.ceil(isl / block_tokens)):
        n = min(block_tokens, isl - i * block_tokens)
        parts.append(block_text(factory, hash_ids[i], n, block_tokens, seed) if i < len(hash_ids)
                     else factory.make(n, rng))
    return " ".join(parts)


def _mooncake(spec: WorkloadSpec, factory: PromptFactory, rng: random.Random) -> Iterator[RequestSpec]:
    rows = read_mooncake(spec.trace_path)
    t0 = rows[0][0]
    overhead = factory.chat_overhead_tokens if spec.endpoint == "chat" else 0
    for ts, isl, osl, ids in rows:
        prompt = mooncake_prompt(factory, isl, ids, spec.block_tokens, spec.seed, rng)
        yield RequestSpec(prompt=prompt, input_len=isl + overhead, output_len=osl,
                          prefix_id=ids[0] if ids else None, arrival_s=ts - t0)


# --- multi-turn sessions -----------------------------------------------------------------------


@dataclass
class Turn:
    """One planned turn: the new user message, the output length asked for, the pause before it."""

    user_text: str
    user_tokens: int
    output_len: int
    think_s: float  # pause after the previous answer (0 for the first turn)


@dataclass
class Session:
    """One conversation. `request(t)` builds turn t from what the server answered so far.

    Turn t's prompt is the whole conversation: system prompt, every earlier user message and the
    server's answer to it, then turn t's user message. `add_answer` folds an answer back.
    """

    session_id: int
    turns: list[Turn]
    factory: PromptFactory
    endpoint: str = "completions"
    system_text: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    arrival_s: float | None = None  # sessions are started by the load generator, never by a trace

    def messages(self, t: int) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system_text}] if self.system_text else []
        return [*head, *self.history, {"role": "user", "content": self.turns[t].user_text}]

    def request(self, t: int) -> RequestSpec:
        if len(self.history) != 2 * t:
            raise ValueError(f"turn {t} needs the answers of turns 0..{t - 1} first")
        msgs = self.messages(t)
        text = self.factory.render_chat(msgs)
        n = self.factory.count(text)
        if n is None:  # a word vocabulary without a tokenizer: one word is one token
            n = len(text.split())
        turn = self.turns[t]
        if self.endpoint == "chat":
            return RequestSpec(prompt=None, messages=msgs, input_len=n, output_len=turn.output_len,
                               session_id=self.session_id, turn=t + 1)
        return RequestSpec(prompt=text, input_len=n, output_len=turn.output_len,
                           session_id=self.session_id, turn=t + 1)

    def add_answer(self, t: int, answer: str) -> None:
        """Fold turn t's answer (the text the server streamed) into the conversation."""
        self.history += [{"role": "user", "content": self.turns[t].user_text},
                         {"role": "assistant", "content": answer.strip()}]


def _think_s(spec: WorkloadSpec, rng: random.Random) -> float:
    if spec.think_time_s <= 0:
        return 0.0
    return spec.think_time_s if spec.think_time_dist == "fixed" else rng.expovariate(1.0 / spec.think_time_s)


def iter_sessions(spec: WorkloadSpec, factory: PromptFactory, seed_offset: int = 0) -> Iterator[Session]:
    """Endless sessions of a multiturn workload; same spec and seed offset, same sessions."""
    rng = random.Random(spec.seed * 1_000_003 + seed_offset)
    system = None
    if spec.system_prompt_len:  # one system prompt for the workload (seed only): every session shares it
        system = factory.make(spec.system_prompt_len, random.Random(spec.seed * 1_000_003 - 2))
    k = 0
    while True:
        n_turns = ranged_len(rng, spec.turns, spec.turns_range_ratio)
        turns = []
        for t in range(n_turns):
            n_user = ranged_len(rng, spec.input_len, spec.range_ratio)
            turns.append(Turn(user_text=factory.make(n_user, rng), user_tokens=n_user,
                              output_len=ranged_len(rng, spec.output_len, spec.range_ratio),
                              think_s=_think_s(spec, rng) if t else 0.0))
        yield Session(session_id=k, turns=turns, factory=factory, endpoint=spec.endpoint, system_text=system)
        k += 1


def check_workload_files(spec: WorkloadSpec) -> None:
    """Read a workload's trace file now, so a bad row fails (exit 2) before any server starts."""
    if spec.kind == "trace":
        read_trace(spec.trace_path)
    elif spec.kind == "mooncake":
        read_mooncake(spec.trace_path)
