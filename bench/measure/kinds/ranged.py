"""Kind ranged: uniform integer lengths in [floor(L(1-r)), ceil(L(1+r))], as vLLM's `random` dataset."""

from __future__ import annotations

import random

from bench.config.workload_spec import WorkloadSpec
from bench.measure.kinds import LengthsKind, register_kind
from bench.measure.prompts import ranged_len


@register_kind
class Ranged(LengthsKind):
    name = "ranged"

    def lengths(self, spec: WorkloadSpec, rng: random.Random) -> tuple[int, int]:
        return ranged_len(rng, spec.input_len, spec.range_ratio), ranged_len(rng, spec.output_len, spec.range_ratio)
