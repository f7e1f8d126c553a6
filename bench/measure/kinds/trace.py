"""Kind trace: maas-bench JSONL rows replayed in timestamp order (bench.measure.traces)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from bench.config.workload_spec import WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.kinds import TraceFileKind, register_kind
from bench.measure.prompts import PromptFactory
from bench.measure.traces import read_trace, trace_requests


@register_kind
class Trace(TraceFileKind):
    name = "trace"

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[RequestSpec]:
        return trace_requests(spec, factory, rng)

    def read_files(self, spec: WorkloadSpec) -> Any:
        return read_trace(spec.trace_path)
