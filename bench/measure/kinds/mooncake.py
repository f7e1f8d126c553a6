"""Kind mooncake: the public Mooncake trace format, hash-id blocks as shared prefixes (bench.measure.traces)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from bench.config.workload_spec import WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.kinds import TraceFileKind, register_kind
from bench.measure.prompts import PromptFactory
from bench.measure.traces import mooncake_requests, read_mooncake


@register_kind
class Mooncake(TraceFileKind):
    name = "mooncake"

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[RequestSpec]:
        return mooncake_requests(spec, factory, rng)

    def read_files(self, spec: WorkloadSpec) -> Any:
        return read_mooncake(spec.trace_path)
