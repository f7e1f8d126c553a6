"""Prompts are unique across points (seeded by the point id) unless a workload shares them on purpose."""

from __future__ import annotations

from itertools import islice

from bench.config.sweep import Sweep
from bench.measure.prompts import STREAM_COOLDOWN, STREAM_MEASURED, STREAM_WARMUP, point_seed_offset
from bench.measure.workloads import PromptFactory, iter_requests


def _sweep(workload: dict) -> Sweep:
    return Sweep(name="s", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                 server={"model": "glm-4.5-tiny"}, load={"concurrency": [1, 2, 4], "num_requests": 8},
                 workloads=[workload])


def _prompts(point, stream, n=8):
    f = PromptFactory.for_vocab_size(2048)
    return [r.prompt for r in islice(iter_requests(point.workload, f, point_seed_offset(point.point_id, stream)), n)]


def test_every_point_and_stream_draws_its_own_prompts_and_the_same_point_the_same_ones():
    points = _sweep({"name": "w", "input_len": 64, "output_len": 8}).points()
    streams = [_prompts(p, s) for p in points for s in (STREAM_MEASURED, STREAM_WARMUP, STREAM_COOLDOWN)]
    flat = [x for s in streams for x in s]
    assert len(set(flat)) == len(flat)  # 3 points x 3 streams x 8 prompts, no repeat
    again = _sweep({"name": "w", "input_len": 64, "output_len": 8}).points()
    assert _prompts(again[1], STREAM_MEASURED) == _prompts(points[1], STREAM_MEASURED)  # reproducible
    assert len({point_seed_offset("abc", 0), point_seed_offset("abc", 1), point_seed_offset("abd", 1)}) == 3


def test_a_prefix_workload_shares_its_prefixes_across_points_on_purpose():
    points = _sweep({"name": "p", "kind": "prefix", "prefix_len": 32, "input_len": 8, "output_len": 8,
                     "num_prefixes": 2, "reuse_ratio": 1.0}).points()
    a, b = _prompts(points[0], STREAM_MEASURED, 4), _prompts(points[2], STREAM_MEASURED, 4)
    prefix = lambda p: " ".join(p.split()[:32])  # noqa: E731 - word-level vocabulary: 32 words = 32 tokens
    assert {prefix(p) for p in a} == {prefix(p) for p in b} and len({prefix(p) for p in a}) == 2
    assert set(a).isdisjoint(b)  # the unique suffixes differ
