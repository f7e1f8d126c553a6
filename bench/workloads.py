"""Request generators: prompts sized exactly in tokens, output lengths pinned, seeded.

Prompts are built from the model's own tokenizer vocabulary so that the number of prompt tokens
is known before sending (for the word-level tokenizer of materialized model dirs it is exact:
one word, one token). For a user-supplied tokenizer the prompt is re-encoded and trimmed until
its length matches.

Length semantics:
- fixed: every request has input_len / output_len.
- ranged: uniform integers in [L(1-r), L(1+r)], centred on L, as vLLM's benchmark `random`
  dataset does with `--random-range-ratio r`. (InferenceX's ranged ISL/OSL instead draws from
  [rL, L], which is never longer than L and has mean L(1+r)/2.)
- chat: lognormal lengths with median input_len / output_len and shape input_sigma /
  output_sigma, clipped to [1, 8x median].
- prefix: `num_prefixes` shared prefixes of `prefix_len` tokens; a fraction `reuse_ratio` of
  requests starts with one of them (round-robin), followed by a unique suffix of input_len tokens.
- trace: JSONL rows {"timestamp": s, "input_len": n, "output_len": m, "prefix_id": optional}.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from bench.client import RequestSpec
from bench.config import WorkloadSpec
from bench.errors import UserInputError
from bench.modeldir import SPECIAL_TOKENS, vocabulary


class PromptFactory:
    """Makes prompts of an exact token count from a vocabulary of single-token words."""

    def __init__(self, words: list[str], count_tokens: Callable[[str], int] | None = None) -> None:
        if not words:
            raise ValueError("empty vocabulary")
        self.words = words
        self.count_tokens = count_tokens

    @classmethod
    def for_vocab_size(cls, vocab_size: int) -> PromptFactory:
        return cls([w for w in vocabulary(vocab_size) if w not in SPECIAL_TOKENS])

    def make(self, n_tokens: int, rng: random.Random) -> str:
        return " ".join(rng.choice(self.words) for _ in range(n_tokens))


def _ranged(rng: random.Random, length: int, ratio: float) -> int:
    lo, hi = max(1, int(length * (1 - ratio))), max(1, int(length * (1 + ratio)))
    return rng.randint(lo, hi)


def _lognormal(rng: random.Random, median: int, sigma: float) -> int:
    import math

    x = int(round(rng.lognormvariate(math.log(median), sigma)))
    return min(max(1, x), 8 * median)


def generate(spec: WorkloadSpec, n: int, factory: PromptFactory, seed_offset: int = 0) -> list[RequestSpec]:
    """`n` requests for a workload; the same spec and seed give the same requests."""
    rng = random.Random(spec.seed * 1_000_003 + seed_offset)
    if spec.kind == "trace":
        return _trace(spec, n, factory, rng)
    prefixes: list[str] = []
    if spec.kind == "prefix":
        prefixes = [factory.make(spec.prefix_len, rng) for _ in range(spec.num_prefixes)]
    out: list[RequestSpec] = []
    for i in range(n):
        if spec.kind == "fixed":
            isl, osl = spec.input_len, spec.output_len
        elif spec.kind == "ranged":
            isl, osl = _ranged(rng, spec.input_len, spec.range_ratio), _ranged(rng, spec.output_len, spec.range_ratio)
        elif spec.kind == "chat":
            isl, osl = _lognormal(rng, spec.input_len, spec.input_sigma), _lognormal(rng, spec.output_len,
                                                                                    spec.output_sigma)
        else:  # prefix
            isl, osl = spec.input_len, spec.output_len
        prompt = factory.make(isl, rng)
        prefix_id = None
        if spec.kind == "prefix" and rng.random() < spec.reuse_ratio:
            prefix_id = i % spec.num_prefixes
            prompt = prefixes[prefix_id] + " " + prompt
            isl += spec.prefix_len
        out.append(RequestSpec(prompt=prompt, input_len=isl, output_len=osl, prefix_id=prefix_id))
    return out


def _trace(spec: WorkloadSpec, n: int, factory: PromptFactory, rng: random.Random) -> list[RequestSpec]:
    if not spec.trace_path or not Path(spec.trace_path).is_file():
        raise UserInputError(f"workload.trace_path: no such file {spec.trace_path!r}")
    rows = []
    for lineno, line in enumerate(Path(spec.trace_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((float(row["timestamp"]), int(row["input_len"]), int(row["output_len"]),
                         row.get("prefix_id")))
        except (ValueError, KeyError, TypeError) as e:
            raise UserInputError(f"{spec.trace_path}:{lineno}: need timestamp, input_len, output_len ({e})") from None
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0] if rows else 0.0
    prefixes: dict[int, str] = {}
    out = []
    for ts, isl, osl, pid in rows[:n]:
        prompt = factory.make(isl, rng)
        if pid is not None:
            pid = int(pid)
            prefix = prefixes.setdefault(pid, factory.make(spec.prefix_len, random.Random(pid)))
            prompt = prefix + " " + prompt
            isl += spec.prefix_len
        out.append(RequestSpec(prompt=prompt, input_len=isl, output_len=osl, prefix_id=pid, arrival_s=ts - t0))
    return out
