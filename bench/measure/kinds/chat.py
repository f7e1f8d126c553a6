"""Kind chat: lognormal lengths with median input_len / output_len (shape input_sigma / output_sigma)."""

from __future__ import annotations

import random

from bench.config.workload_spec import WorkloadSpec
from bench.measure.kinds import LengthsKind, register_kind
from bench.measure.prompts import lognormal_len


@register_kind
class Chat(LengthsKind):
    name = "chat"

    def lengths(self, spec: WorkloadSpec, rng: random.Random) -> tuple[int, int]:
        isl = lognormal_len(rng, spec.input_len, spec.input_sigma)
        return isl, lognormal_len(rng, spec.output_len, spec.output_sigma)
