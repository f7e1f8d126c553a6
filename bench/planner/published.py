"""Published GPU runs (configs/published_runs.yaml): the planner's training and test set.

Why: the planner's numbers go straight into fleet sizes, and a planner nobody has checked against
real GPUs is a guess. Each row is one public benchmark point, re-checked at its source, with
`published` numbers (printed by the source) kept apart from `derived` ones (our arithmetic). This
module loads and validates that file and reduces each row to what the planner predicts and grades:
deployment output tok/s and TPOT (ms). The fit and the leave-one-out check live in
bench.planner.fit.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, ValidationError

from bench.config import base
from bench.config.base import StrictModel
from bench.config.quant import kv_bits_of
from bench.errors import UserInputError
from bench.units import MS_PER_S

PUBLISHED_RUNS = base.CONFIG_DIR / "published_runs.yaml"
# vLLM/SGLang TPOT keys in the order we prefer them (median first: a closed-loop point's typical step)
_TPOT_KEYS = ("tpot_ms_median", "tpot_ms", "tpot_ms_mean")
# TTFT keys in the same order, with the statistic each names (an unlabelled figure is read as the median)
_TTFT_KEYS = (("ttft_ms_median", "p50"), ("ttft_ms", "p50"), ("ttft_ms_mean", "mean"))
# weight_quant of a published row -> planner preset (bench.config.quant); MXFP8 on Hopper runs the FP8 path
_QUANT_PRESET = {"bf16": "bf16", "fp8": "fp8", "mxfp8": "fp8", "nvfp4": "fp4", "int4": "int4", "int8": "int8"}


class SpecSettings(StrictModel):
    """Speculative decoding of a published run (None = off); extra engine-specific keys are kept."""

    model_config = {**StrictModel.model_config, "extra": "allow"}
    method: str
    num_speculative_tokens: int | None = Field(None, ge=0)
    num_draft_tokens: int | None = Field(None, ge=0)
    acceptance_length: float | None = Field(None, ge=1)

    def draft_tokens(self) -> int:
        """K draft tokens verified per step (SGLang's num_draft_tokens counts the verified root too)."""
        if self.num_speculative_tokens is not None:
            return self.num_speculative_tokens
        return max((self.num_draft_tokens or 1) - 1, 0)


class PublishedRun(StrictModel):
    """One row of configs/published_runs.yaml (see the file's header for the conventions)."""

    model_config = {**StrictModel.model_config, "extra": "allow"}
    id: str
    model: str
    engine: str
    gpu: str
    gpu_count: int = Field(gt=0)
    tensor_parallel: int | None = Field(None, gt=0)
    expert_parallel: bool | None = None
    data_parallel: int | None = Field(None, gt=0)
    dp_attention: bool | None = Field(None, description="data-parallel attention: data_parallel attention groups "
                                      "inside the tensor_parallel GPUs of one server (SGLang --enable-dp-attention)")
    weight_quant: str | None = None
    kv_cache_dtype: str | None = None
    isl: int | None = Field(None, gt=0)
    osl: int | None = Field(None, gt=1)
    concurrency: int = Field(gt=0)
    num_prompts: int | None = Field(None, gt=0)
    # scheduler limits, only where the source's launch command states them (vLLM --max-num-seqs /
    # --max-num-batched-tokens; SGLang --max-running-requests / --chunked-prefill-size); else vLLM defaults
    max_num_seqs: int | None = Field(None, gt=0)
    max_num_batched_tokens: int | None = Field(None, gt=0)
    spec: SpecSettings | None = None
    published: dict[str, float]
    derived: dict[str, float] = Field(default_factory=dict)
    source: str
    verified: bool
    weight: float = Field(ge=0, le=1)

    def tpot_ms(self) -> float | None:
        """Published TPOT (median, else unlabelled, else mean), else 1000 / tok_s_per_user."""
        for k in _TPOT_KEYS:
            if k in self.published:
                return self.published[k]
        if "tok_s_per_user" in self.published:
            return MS_PER_S / self.published["tok_s_per_user"]
        return None

    def ttft_ms(self) -> tuple[float, str] | None:
        """Published TTFT and its statistic ("p50" or "mean"), None when not published."""
        for k, stat in _TTFT_KEYS:
            if k in self.published:
                return self.published[k], stat
        return None

    def output_tok_s(self) -> float | None:
        """Deployment output tok/s: published, else from published total tok/s/GPU (ISL+OSL split)."""
        if "output_tok_s" in self.published:
            return self.published["output_tok_s"]
        per_gpu = self.published.get("total_tok_s_per_gpu")
        if per_gpu is not None and self.isl and self.osl:
            return per_gpu * self.gpu_count * self.osl / (self.isl + self.osl)
        return None

    def mean_osl(self) -> int | None:
        """Output tokens per request the point really generated (a cap without --ignore-eos is not)."""
        v = self.derived.get("mean_output_len")
        return int(v) if v else self.osl

    def attention_groups(self) -> int:
        """DP-attention groups of one server: data_parallel when dp_attention, else 1."""
        return (self.data_parallel or 1) if self.dp_attention else 1

    def single_wave(self) -> bool:
        """One burst: every prompt is in flight at once (num_prompts <= concurrency), so the run is one
        prefill wave then decode, not a steady state (bench.planner.serving.burst_latencies_s)."""
        return self.num_prompts is not None and self.num_prompts <= self.concurrency

    def preset(self) -> str | None:
        return _QUANT_PRESET.get(self.weight_quant or "")

    def kv_bits(self) -> float | None:
        return kv_bits_of(self.kv_cache_dtype)

    def why_not_gradable(self, known_models: set[str], known_gpus: set[str]) -> str | None:
        """Why the planner cannot grade this row (None = it can)."""
        if self.model not in known_models:
            return "model not in catalog"
        if self.gpu not in known_gpus:
            return "gpu not in configs/hardware.yaml"
        if not self.isl or not self.osl:
            return "ISL/OSL not published"
        if self.preset() is None:
            return f"weight quantization {self.weight_quant!r} not published or unknown"
        if self.output_tok_s() is None and self.tpot_ms() is None:
            return "neither throughput nor TPOT published"
        return None


class PublishedFile(StrictModel):
    runs: list[PublishedRun] = Field(min_length=1)


def load_published_runs(path: Path | None = None) -> list[PublishedRun]:
    """The published runs, validated; a bad file raises a one-line UserInputError naming the row and field."""
    path = Path(path or PUBLISHED_RUNS)
    data = base.read_yaml(path)
    if not isinstance(data, dict) or "runs" not in data:
        raise UserInputError(f"{path}: must be a YAML mapping with a `runs:` list")
    try:
        runs = PublishedFile.model_validate(data).runs
    except ValidationError as e:
        err = base.first_error(e)
        loc = list(err.loc)
        where = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "runs" and isinstance(loc[1], int):
            rows = data.get("runs") or []
            rid = rows[loc[1]].get("id") if loc[1] < len(rows) and isinstance(rows[loc[1]], dict) else None
            where = f"runs[{loc[1]}]{' (' + str(rid) + ')' if rid else ''}." + ".".join(str(x) for x in loc[2:])
        raise UserInputError(f"{path}: {where}: {err.raw_msg}") from None
    for r in runs:
        bad = [k for k, v in {**r.published, **r.derived}.items() if not math.isfinite(v)]
        if bad:
            raise UserInputError(f"{path}: {r.id}: {bad[0]} must be a finite number")
    ids = [r.id for r in runs]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise UserInputError(f"{path}: run id {dup!r} appears twice; ids must be unique")
    return runs
