"""Kind multiturn: agentic sessions whose every turn resends the conversation (bench.measure.sessions)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from bench.config.workload_spec import WorkloadSpec
from bench.measure.kinds import WorkloadKind, register_kind
from bench.measure.prompts import PromptFactory
from bench.measure.sessions import Session, iter_sessions


@register_kind
class Multiturn(WorkloadKind):
    name = "multiturn"

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[Session]:
        return iter_sessions(spec, factory, seed_offset)  # sessions draw from their own rng
