"""THE workload-kind registry: `workloads[].kind` of a sweep file -> the module that generates its requests.

One module per kind (fixed, ranged, chat, prefix, trace, mooncake, multiturn): each defines a
`WorkloadKind` subclass and registers it with `@register_kind`; this package imports every module
in it, so adding a kind is one new module here (plus its fields in bench.config.workload_spec,
which the config layer must know without importing measure). The semantics of each kind are in
bench.measure.workloads' docstring; nothing else in bench/ compares `kind` strings.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from collections.abc import Iterator
from typing import Any, ClassVar

from bench.config.workload_spec import WORKLOAD_KINDS, WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.prompts import PromptFactory, sized_request


class WorkloadKind:
    """How one kind turns a WorkloadSpec into requests (and reads its input files, if it has any)."""

    name: ClassVar[str]

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[Any]:
        """Endless requests (or sessions), or a trace's rows; `rng` is seeded by (seed, seed_offset)."""
        raise NotImplementedError

    def read_files(self, spec: WorkloadSpec) -> Any:
        """Parse the kind's input file (a bad row: UserInputError naming file and line); None without one."""
        return None

    def file_max_tokens(self, data: Any) -> int | None:
        """The longest request (input + output) in what read_files returned; None when not checked."""
        return None


class TraceFileKind(WorkloadKind):
    """A kind replaying a trace file whose `read_files` rows are (timestamp_s, input_len, output_len, ...):
    the longest request is checked against max_model_len (and MAX_REQUEST_TOKENS) by bench.sweep.prepare
    before anything starts, for every such kind alike (kind mooncake used to skip it and failed at run time)."""

    def file_max_tokens(self, data: Any) -> int | None:
        return max(row[1] + row[2] for row in data) if data else None


class LengthsKind(WorkloadKind):
    """A kind whose requests differ only in their (input, output) lengths, drawn per request."""

    def lengths(self, spec: WorkloadSpec, rng: random.Random) -> tuple[int, int]:
        raise NotImplementedError

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[RequestSpec]:
        while True:
            isl, osl = self.lengths(spec, rng)
            yield sized_request(factory, spec, isl, osl, rng)


KINDS: dict[str, WorkloadKind] = {}


def register_kind(cls: type[WorkloadKind]) -> type[WorkloadKind]:
    if cls.name in KINDS:
        raise ValueError(f"workload kind {cls.name!r} is registered twice")
    KINDS[cls.name] = cls()
    return cls


def workload_kind(name: str) -> WorkloadKind:
    return KINDS[name]


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}")

if set(KINDS) != set(WORKLOAD_KINDS):  # pragma: no cover - a kind without its generator, or the reverse
    raise RuntimeError(f"workload kinds differ: generators {sorted(KINDS)} vs config {sorted(WORKLOAD_KINDS)}")
