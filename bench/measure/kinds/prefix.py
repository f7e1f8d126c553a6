"""Kind prefix: a prefix of prefix_len tokens (shared with probability reuse_ratio) + a unique suffix."""

from __future__ import annotations

import random
from collections.abc import Iterator

from bench.config.workload_spec import WorkloadSpec
from bench.measure.client import RequestSpec
from bench.measure.kinds import WorkloadKind, register_kind
from bench.measure.prompts import PromptFactory, sized_request


@register_kind
class Prefix(WorkloadKind):
    name = "prefix"

    def requests(self, spec: WorkloadSpec, factory: PromptFactory, rng: random.Random,
                 seed_offset: int) -> Iterator[RequestSpec]:
        # The shared prefixes depend on the seed only, so warm-up, measured and cool-down
        # streams (different seed offsets) share them, as a real prompt cache would see.
        # Made lazily, in id order (ids are used 0, 1, 2, ... in turn), so the texts are the ones an eager list
        # would hold while memory grows with the prefixes used, not with num_prefixes (1e9 was a MemoryError).
        prng = random.Random(spec.seed * 1_000_003 - 1)
        shared: list[str] = []
        reused = 0
        while True:
            isl, osl = spec.input_len, spec.output_len
            if rng.random() < spec.reuse_ratio:
                pid: int | None = reused % spec.num_prefixes
                reused += 1
                while len(shared) <= pid:
                    shared.append(factory.make(spec.prefix_len, prng))
                prefix = shared[pid]
            else:
                pid, prefix = None, factory.make(spec.prefix_len, rng)
            yield sized_request(factory, spec, spec.prefix_len + isl, osl, rng, prefix, spec.prefix_len, pid)
