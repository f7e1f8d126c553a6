"""Kind fixed: every request has input_len / output_len."""

from __future__ import annotations

import random

from bench.config.workload_spec import WorkloadSpec
from bench.measure.kinds import LengthsKind, register_kind


@register_kind
class Fixed(LengthsKind):
    name = "fixed"

    def lengths(self, spec: WorkloadSpec, rng: random.Random) -> tuple[int, int]:
        return spec.input_len, spec.output_len
