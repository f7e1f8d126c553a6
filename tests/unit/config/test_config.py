"""Sweep validation (clear one-line errors) and deterministic matrix expansion."""

import re
import textwrap

import pytest
from pydantic import ValidationError

from bench.config.speculative import SpeculativeSpec
from bench.config.sweep import ServerSpec, Sweep, load_sweep
from bench.errors import UserInputError

BASE = """
name: t
hardware: {gpu: cpu-2core, usd_per_gpu_hour: 0.1}
server:
  model: glm-4.5-tiny
  dtype: [bfloat16, float32]
  max_num_seqs: [8, 16]
load:
  concurrency: [1, 4]
  num_requests: 4
"""


def write(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_expansion_is_cartesian_and_grouped_by_server(tmp_path):
    sweep = load_sweep(write(tmp_path, BASE))
    points = sweep.points()
    assert len(points) == 2 * 2 * 2
    # grouped: consecutive points share a server until the server changes, 4 distinct servers
    hashes = [p.server_hash for p in points]
    assert len(set(hashes)) == 4
    assert hashes == sorted(hashes, key=hashes.index)  # each server's points are contiguous
    assert [p.load.concurrency for p in points[:2]] == [1, 4]


def test_point_ids_are_stable_and_sensitive(tmp_path):
    a = [p.point_id for p in load_sweep(write(tmp_path, BASE)).points()]
    b = [p.point_id for p in load_sweep(write(tmp_path, BASE)).points()]
    assert a == b and len(set(a)) == len(a)
    changed = [p.point_id for p in load_sweep(write(tmp_path, BASE.replace("num_requests: 4", "num_requests: 5")))
               .points()]
    assert not set(a) & set(changed)


def test_zip_links_axes(tmp_path):
    text = BASE + "zip: [[dtype, max_num_seqs]]\n"
    specs = load_sweep(write(tmp_path, text)).server_specs()
    assert [(s.dtype, s.max_num_seqs) for s in specs] == [("bfloat16", 8), ("float32", 16)]


def test_exclude_and_include(tmp_path):
    text = BASE + "exclude: [{dtype: float32, max_num_seqs: 16}]\ninclude: [{max_num_seqs: 64}]\n"
    specs = load_sweep(write(tmp_path, text)).server_specs()
    combos = [(s.dtype, s.max_num_seqs) for s in specs]
    assert ("float32", 16) not in combos
    assert ("bfloat16", 64) in combos  # include takes the first value of the other axes
    assert len(combos) == 4


@pytest.mark.parametrize(
    "patch, needle",
    [
        (("max_num_seqs: [8, 16]", "max_num_seq: 8"), "max_num_seq"),
        (("concurrency: [1, 4]", "concurrency: [1, -4]"), "positive integers"),
        (("model: glm-4.5-tiny", "model: glm-9000"), "unknown model 'glm-9000'"),
        (("dtype: [bfloat16, float32]", "dtype: int3"), "dtype must be one of"),
        (("num_requests: 4", "num_requests: 4\n  bogus: 1"), "load.bogus: unknown field; allowed:"),
    ],
)
def test_bad_input_names_the_field(tmp_path, patch, needle):
    with pytest.raises(UserInputError) as e:
        load_sweep(write(tmp_path, BASE.replace(*patch)))
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg and str(tmp_path) in msg


def test_unknown_server_field_lists_allowed(tmp_path):
    with pytest.raises(UserInputError, match="allowed: model, dtype"):
        load_sweep(write(tmp_path, BASE.replace("max_num_seqs: [8, 16]", "max_num_seq: 8")))


def test_invalid_yaml_gives_line(tmp_path):
    with pytest.raises(UserInputError, match=r"line \d+ invalid YAML"):
        load_sweep(write(tmp_path, "name: [unclosed\n"))


def test_missing_file():
    with pytest.raises(UserInputError, match="no such file"):
        load_sweep("/nonexistent/x.yaml")


def test_load_needs_concurrency_or_rate():
    with pytest.raises(ValueError, match="concurrency or request_rate"):
        Sweep(name="x", server={"model": "glm-4.5-tiny"}, load={"num_requests": 3})


def test_shipped_sweeps_validate():
    from pathlib import Path

    for p in sorted(Path(__file__).resolve().parents[3].glob("configs/sweeps/*.yaml")):
        assert load_sweep(p).points(), p


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ServerSpec(model="m", dtype="fp7"),
         "dtype must be one of auto, bfloat16, float16, float32 (got 'fp7')"),
        (lambda: ServerSpec(model="m", kv_cache_dtype="int2"),
         "kv_cache_dtype must be one of auto, fp8, fp8_e4m3, fp8_e5m2 (got 'int2')"),
        (lambda: SpeculativeSpec(method="medusa", num_speculative_tokens=1),
         "method must be one of mtp, eagle3, ngram, draft_model (got 'medusa')"),
    ],
)
def test_enum_like_fields_name_the_field_and_the_allowed_values(make, message):
    """The shared `one_of_validator` on each field that uses it (messages written out by hand)."""
    with pytest.raises(ValidationError, match=re.escape(message)):
        make()
    assert ServerSpec(model="m", dtype="float16", kv_cache_dtype="fp8").kv_cache_dtype == "fp8"
    assert SpeculativeSpec(method="ngram", num_speculative_tokens=2).method == "ngram"
