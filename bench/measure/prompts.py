"""Prompts sized exactly in tokens, and the length distributions the workloads draw from.

Why exact: a benchmark that asks for 1024 input tokens and sends 1031 measures the wrong point
of the curve, and its $/M-input-token figure is off by the same amount. So every prompt is built
to a token count *with the model's tokenizer*, and the e2e test checks the request's length
against the server's `usage.prompt_tokens`.

Two ways to size a prompt (`PromptFactory`):
- word-level tokenizers (the ones `bench.engines.modeldir` materializes from `bench.config.vocab`: one
  whitespace-separated word is one token): join N vocabulary words. Exact by construction, no encoding needed.
- any other tokenizer (BPE, unigram, ...): draw N random non-special token ids, decode, re-encode
  the text (decoding and re-encoding is not the identity: "calls"+"here" may come back as
  "call"+"sh"+"ere"), then trim or pad the token list to the target and repeat until the
  re-encoded count is exactly the target. A prompt that cannot be fitted raises instead of
  silently sending a different length.
For the chat endpoint the server wraps the content in the chat template, so the content is made
`chat_overhead_tokens` shorter (measured once by rendering the template) and the requested
input length is still what the server counts.

Part of bench.measure.workloads (which re-exports these names); split out so the tokenizer
handling reads on its own.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config.vocab import SPECIAL_TOKENS, vocabulary
from bench.config.workload_spec import WorkloadSpec
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
        """Word prompts for the word-level vocabulary (bench.config.vocab) of `vocab_size` words."""
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


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """Compiling a chat template costs ms (rendering costs µs), and multi-turn sessions render one per
    turn on the client's event loop: compile each template once."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)


def _render_template(template: str, messages: list[dict[str, str]], special: dict[str, Any]) -> str:
    return _compiled(template).render(
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


def sized_request(factory: PromptFactory, spec: WorkloadSpec, isl: int, osl: int, rng: random.Random,
                  prefix: str | None = None, prefix_tokens: int = 0, prefix_id: int | None = None,
                  arrival_s: float | None = None) -> RequestSpec:
    """One request whose server-side prompt length is `isl` (chat template included)."""
    overhead = factory.chat_overhead_tokens if spec.endpoint == "chat" else 0
    body = max(1, isl - prefix_tokens - overhead)
    prompt = factory.make(body, rng, prefix)
    return RequestSpec(prompt=prompt, input_len=prefix_tokens + body + overhead, output_len=osl,
                       prefix_id=prefix_id, arrival_s=arrival_s)


# the request streams of one point, each seeded apart (bench.sweep.session): measured, warm-up, cool-down
STREAM_MEASURED, STREAM_WARMUP, STREAM_COOLDOWN = 0, 1, 2


def point_seed_offset(point_id: str, stream: int) -> int:
    """The seed offset of one request stream of one point, derived from the point's id (the hash of its resolved
    config): every point of a sweep, and every stream of a point, draws different prompts, so no point is served
    from a prefix cache that an earlier point (or the warm-up) filled with the same text, while the same point
    gets the same prompts in every run. Shared text that a workload wants (a prefix workload's prefixes, a
    multiturn system prompt, Mooncake hash blocks) is seeded by the workload's own seed, not by this offset."""
    import hashlib

    digest = hashlib.sha256(f"{point_id}:{stream}".encode()).digest()
    return int.from_bytes(digest[:6], "big")  # 48 bits: collisions across a sweep's streams are negligible
