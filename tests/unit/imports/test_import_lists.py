"""Files of one result object or a list of them (InferenceX aggregates, llm-d reports) are read by the one
shared loop in bench.sweep.imports.base (`read_points`): these pin what both formats get from it, the names
errors give an object ("result 1", "the report") and the refusal of an empty list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import UserInputError
from bench.sweep.imports import inferencex, llmd, read

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "imports"
INFERENCEX = FIX / "inferencex" / "agg_glm45air_fp8_h200_tp8_conc64.json"
LLMD = FIX / "llm-d" / "benchmark_report_v0.2.1_glm45air_h200.json"
# (module, fixture, the key whose absence makes an object unreadable, the noun errors use, the tool's name)
CASES = [(inferencex, INFERENCEX, "tput_per_gpu", "result", "InferenceX"), (llmd, LLMD, "results", "report", "llm-d")]


@pytest.mark.parametrize(("mod", "fixture", "key", "kind", "name"), CASES)
def test_a_bad_object_is_named_by_its_place_in_the_list(tmp_path, mod, fixture, key, kind, name):
    good = json.loads(fixture.read_text())
    bad = {k: v for k, v in good.items() if k != key}
    f = tmp_path / "many.json"
    f.write_text(json.dumps([good, bad]))
    with pytest.raises(UserInputError, match=rf"many\.json: {kind} 1: "):
        read(f)
    with pytest.raises(UserInputError, match=rf"lone\.json: the {kind}: "):
        mod.parse(bad, tmp_path / "lone.json")
    with pytest.raises(UserInputError, match=rf"empty\.json: an empty list: no {name} {kind} in it"):
        mod.parse([], tmp_path / "empty.json")


@pytest.mark.parametrize(("mod", "fixture", "key", "kind", "name"), CASES)
def test_a_list_gives_one_point_per_object_in_order(tmp_path, mod, fixture, key, kind, name):
    one = json.loads(fixture.read_text())
    lone = mod.parse(one, fixture)
    two = mod.parse([one, one], fixture)
    assert two.points == [lone.points[0], lone.points[0]]
    assert two.tool_version == lone.tool_version and two.notes == lone.notes  # a note is said once per file
