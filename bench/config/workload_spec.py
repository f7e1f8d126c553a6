"""`workloads:` of a sweep file: how prompts and output lengths are generated, and named presets.

Why its own module: the request generators (bench.measure.workloads) read only this spec, and
`max_request_tokens` lets the sweep check every request against max_model_len before a server
starts. Re-exported by bench.config.sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from bench.config.base import StrictModel

# Named workloads that match the field (`workloads: [{preset: agentic}]`; fields given beside `preset`
# override the preset's). 8k1k: InferenceX's fixed 8192-in / 1024-out scenario, which replaced its 1k/1k
# (SemiAnalysis InferenceX, inferencemax.ai, seen 2026-11). agentic: multi-turn coding-agent sessions;
# its sizes are maas-bench's modelling choice (a long shared system prompt, tool output appended every
# turn), not a published trace: replay a real one with kind mooncake / trace for published numbers.
WORKLOAD_PRESETS: dict[str, dict[str, Any]] = {
    "8k1k": {"name": "8k1k", "kind": "fixed", "input_len": 8192, "output_len": 1024},
    "agentic": {"name": "agentic", "kind": "multiturn", "system_prompt_len": 2048, "turns": 8,
                "turns_range_ratio": 0.5, "input_len": 512, "output_len": 256, "range_ratio": 0.5,
                "think_time_s": 2.0, "think_time_dist": "exponential"},
}


WorkloadKindName = Literal["fixed", "ranged", "chat", "prefix", "trace", "mooncake", "multiturn"]


class WorkloadSpec(StrictModel):
    """How prompts and output lengths are generated (see bench/measure/workloads.py for semantics)."""

    name: str = "fixed"
    preset: Literal["8k1k", "agentic"] | None = Field(
        None, description="start from a named workload (WORKLOAD_PRESETS); fields given beside it override it")
    kind: WorkloadKindName = "fixed"
    input_len: int = Field(128, gt=0)
    output_len: int = Field(64, gt=0)
    range_ratio: float = Field(0.0, ge=0, lt=1)
    # chat-like lognormal lengths
    input_sigma: float = Field(0.8, gt=0)
    output_sigma: float = Field(0.6, gt=0)
    # prefix-sharing
    num_prefixes: int = Field(4, gt=0)
    prefix_len: int = Field(256, gt=0)
    reuse_ratio: float = Field(1.0, ge=0, le=1)
    # trace replay (kind trace: maas-bench JSONL; kind mooncake: Mooncake JSONL with hash_ids)
    trace_path: str | None = None
    block_tokens: int = Field(512, gt=0, description="mooncake: tokens per hash_id block (512 in Mooncake's traces)")
    # multi-turn sessions (kind multiturn): input_len = new user tokens per turn, output_len = output
    # tokens per turn (both ranged by range_ratio); the conversation so far is resent every turn
    turns: int = Field(4, gt=0, description="multiturn: turns per session (centre of the range)")
    turns_range_ratio: float = Field(0.0, ge=0, lt=1, description="multiturn: turns uniform in [T(1-r), T(1+r)]")
    think_time_s: float = Field(0.0, ge=0, description="multiturn: mean pause between a reply and the next turn")
    think_time_dist: Literal["fixed", "exponential"] = "fixed"
    system_prompt_len: int = Field(0, ge=0, description="multiturn: tokens of a system prompt shared by every session")
    seed: int = 0
    endpoint: Literal["completions", "chat"] = "completions"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """`preset: agentic` fills the preset's fields; fields given beside it win."""
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = WORKLOAD_PRESETS.get(data["preset"])
            if preset is None:
                raise ValueError(f"preset must be one of {', '.join(WORKLOAD_PRESETS)} (got {data['preset']!r})")
            return {**preset, **data}
        return data


def _ranged(length: int, ratio: float) -> int:
    return math.ceil(length * (1 + ratio))


# kind -> the longest prompt + output its config asks for (None: decided by a trace file, checked when it
# is read). chat draws lognormal lengths with a long tail; its median request is checked (the tail is
# clipped at 8x and a few over-long requests fail with the server's reason, which is reported).
# The last turn of the longest multiturn session resends the whole conversation.
WORKLOAD_KINDS: dict[str, Callable[[WorkloadSpec], int | None]] = {
    "fixed": lambda w: w.input_len + w.output_len,
    "ranged": lambda w: _ranged(w.input_len, w.range_ratio) + _ranged(w.output_len, w.range_ratio),
    "chat": lambda w: w.input_len + w.output_len,
    "prefix": lambda w: w.prefix_len + w.input_len + w.output_len,
    "trace": lambda w: None,
    "mooncake": lambda w: None,
    "multiturn": lambda w: w.system_prompt_len + math.ceil(w.turns * (1 + w.turns_range_ratio)) * (
        _ranged(w.input_len, w.range_ratio) + _ranged(w.output_len, w.range_ratio)),
}
if set(get_args(WorkloadKindName)) != set(WORKLOAD_KINDS):  # pragma: no cover - a bug in this file
    raise RuntimeError("WorkloadKindName and WORKLOAD_KINDS name different workload kinds")


def max_request_tokens(w: WorkloadSpec) -> int | None:
    """The longest prompt + output a workload asks for by its config (None: decided by a trace file)."""
    return WORKLOAD_KINDS[w.kind](w)
