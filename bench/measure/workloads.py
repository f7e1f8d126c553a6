"""Request generators: prompts sized exactly in tokens, output lengths pinned, seeded.

How a prompt is sized exactly is in bench.measure.prompts (`PromptFactory`); trace and Mooncake
replay in bench.measure.traces; multi-turn sessions in bench.measure.sessions. This module turns a
`WorkloadSpec` into its requests and re-exports those names.

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

import random
from collections.abc import Iterator
from itertools import islice
from typing import Any

from bench.config.workload_spec import WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.kinds import workload_kind
from bench.measure.prompts import (
    PromptFactory,
    lognormal_len,
    ranged_len,
)
from bench.measure.sessions import Session, iter_sessions
from bench.measure.traces import (
    block_text,
    mooncake_prompt,
    read_mooncake,
    read_trace,
)

__all__ = [
    "PromptFactory", "Session", "block_text", "check_workload_files", "generate", "iter_requests", "iter_sessions",
    "lognormal_len", "mooncake_prompt", "ranged_len", "read_mooncake", "read_trace",
]


def iter_requests(spec: WorkloadSpec, factory: PromptFactory, seed_offset: int = 0) -> Iterator[RequestSpec]:
    """Requests of a workload, lazily; endless except for a trace. Same spec and seed, same requests."""
    rng = random.Random(spec.seed * 1_000_003 + seed_offset)
    return workload_kind(spec.kind).requests(spec, factory, rng, seed_offset)


def generate(spec: WorkloadSpec, n: int, factory: PromptFactory, seed_offset: int = 0) -> list[RequestSpec]:
    """The first `n` requests of `iter_requests` (fewer if a trace has fewer rows)."""
    return list(islice(iter_requests(spec, factory, seed_offset), n))


def check_workload_files(spec: WorkloadSpec) -> Any:
    """Read a workload's input file now, so a bad row fails (exit 2) before any server starts; the parsed rows."""
    return workload_kind(spec.kind).read_files(spec)
