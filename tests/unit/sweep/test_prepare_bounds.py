"""Issue 25 item 6: out-of-range input is refused before anything starts (bench/sweep/prepare.py and the trace
readers), one line naming the file, row and field, exit 2, nothing written; what used to fail minutes later."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.load_spec import LoadPoint
from bench.config.sweep import WorkloadSpec
from bench.engines.modeldir import materialize
from bench.errors import UserInputError
from bench.measure.traces import read_mooncake, read_trace
from bench.measure.workloads import PromptFactory, generate
from bench.sweep.prepare import MAX_POINT_SEND_S, MAX_REQUEST_TOKENS, check_send_time, send_time_s
from tests.unit.cli.bad_sweeps import OPENAI, sweep_with


def _run_bad(tmp_path: Path, sweep: dict[str, Any]) -> str:
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(sweep, sort_keys=False))
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    assert list(out.rglob("*")) == []
    return lines[0]


def _trace(tmp_path: Path, text: str) -> str:
    p = tmp_path / "trace.jsonl"
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(p)


@pytest.mark.parametrize("value", ["3.9", "true", '"4"', "0", "-2", "null", "[4]"])
def test_trace_lengths_are_strict_integers(tmp_path, value):
    path = _trace(tmp_path, '{"timestamp": 0, "input_len": 8, "output_len": 4}\n'
                            f'{{"timestamp": 1, "input_len": {value}, "output_len": 4}}\n')
    with pytest.raises(UserInputError) as e:
        read_trace(path)
    assert f"{path}:2: input_len must be an integer >= 1 (got {value})" == str(e.value)


@pytest.mark.parametrize("value", ["3.9", "true", '"4"'])
def test_mooncake_lengths_are_strict_integers(tmp_path, value):
    path = _trace(tmp_path, f'{{"timestamp": 0, "input_length": 8, "output_length": {value}, "hash_ids": [1]}}\n')
    with pytest.raises(UserInputError, match=rf":1: output_length must be an integer >= 1 \(got {value}\)"):
        read_mooncake(path)


def test_prefix_id_and_timestamp_types(tmp_path):
    path = _trace(tmp_path, '{"timestamp": 0, "input_len": 8, "output_len": 4, "prefix_id": 1.5}\n')
    with pytest.raises(UserInputError, match=r":1: prefix_id must be an integer or null \(got 1.5\)"):
        read_trace(path)
    path = _trace(tmp_path, '{"timestamp": "0", "input_len": 8, "output_len": 4}\n')
    with pytest.raises(UserInputError, match=r":1: timestamp must be a finite number of seconds"):
        read_trace(path)


@pytest.mark.parametrize("reader,row", [
    (read_trace, '{"timestamp": 0, "input_len": Infinity, "output_len": 4}'),
    (read_trace, '{"timestamp": NaN, "input_len": 8, "output_len": 4}'),
    (read_mooncake, '{"timestamp": -Infinity, "input_length": 8, "output_length": 4, "hash_ids": []}'),
])
def test_infinity_and_nan_are_not_json(tmp_path, reader, row):
    path = _trace(tmp_path, row + "\n")
    with pytest.raises(UserInputError, match=r":1: not a JSON object \(.*Infinity|NaN"):
        reader(path)


@pytest.mark.parametrize("reader", [read_trace, read_mooncake])
def test_invalid_utf8_names_file_and_line(tmp_path, reader):
    path = _trace(tmp_path, b'\n{"x": "\xff\xfe"}\n')
    with pytest.raises(UserInputError) as e:
        reader(path)
    assert str(e.value) == f"{path}:2: not UTF-8 text (byte 0xff at column 8)"


def test_deeply_nested_row_is_one_line(tmp_path):
    path = _trace(tmp_path, "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UserInputError, match=":1: "):
        read_trace(path)


def test_mooncake_row_longer_than_max_model_len_is_caught_up_front(tmp_path):
    path = _trace(tmp_path, '{"timestamp": 0, "input_length": 500, "output_length": 64, "hash_ids": [1]}\n')
    line = _run_bad(tmp_path, sweep_with(workloads=[{"name": "m", "kind": "mooncake", "trace_path": path}]))
    assert line == (f"error: workload 'm': trace {path} has a request of 564 tokens (input + output) but "
                    "server.max_model_len is 512")


def test_openai_trace_lengths_are_bounded(tmp_path):
    path = _trace(tmp_path, '{"timestamp": 0, "input_len": 1000000000000000000, "output_len": 4}\n')
    line = _run_bad(tmp_path, sweep_with(engine=OPENAI, workloads=[{"name": "t", "kind": "trace",
                                                                    "trace_path": path}]))
    assert f"trace {path} has a request of 1,000,000,000,000,000,004 tokens" in line
    assert f"{MAX_REQUEST_TOKENS:,} of MAX_REQUEST_TOKENS" in line


def test_strict_trace_type_through_the_cli_names_row_and_field(tmp_path):
    path = _trace(tmp_path, '{"timestamp": 0, "input_len": true, "output_len": 4}\n')
    line = _run_bad(tmp_path, sweep_with(workloads=[{"name": "t", "kind": "trace", "trace_path": path}]))
    assert line == f"error: {path}:1: input_len must be an integer >= 1 (got true)"


def test_send_time_by_hand():
    # 2 warm-up + 32 measured requests at 0.01 req/s after a 10 s ramp: 10 + 34 / 0.01 = 3410 s
    lp = LoadPoint(request_rate=0.01, num_requests=32, warmup_requests=2, ramp_s=10)
    assert send_time_s(lp) == pytest.approx(3410.0)
    # with duration_s the count is unused: 2 warm-up / 0.5 + 60 s = 64 s
    assert send_time_s(LoadPoint(request_rate=0.5, warmup_requests=2, duration_s=60)) == pytest.approx(64.0)
    assert send_time_s(LoadPoint(concurrency=4, num_requests=10**9)) == 0.0  # the server paces closed loop
    check_send_time(LoadPoint(request_rate=32 / MAX_POINT_SEND_S, num_requests=32))  # exactly a day: allowed
    with pytest.raises(UserInputError, match="MAX_POINT_SEND_S"):
        check_send_time(LoadPoint(request_rate=32 / MAX_POINT_SEND_S * 0.99, num_requests=32))


def test_prefix_texts_are_made_lazily_and_match_the_eager_list(tmp_path):
    """num_prefixes: 1e9 used to build 1e9 prefixes up front (MemoryError after ~1 min); the prefixes are the
    texts the eager list held: the i-th draw of the seed's own rng."""
    factory = PromptFactory.for_model_dir(materialize("glm-4.5-tiny", None, tmp_path))
    spec = WorkloadSpec(kind="prefix", num_prefixes=10**9, prefix_len=12, input_len=4, output_len=2,
                        reuse_ratio=1.0, seed=3)
    reqs = generate(spec, 5, factory)
    assert [r.prefix_id for r in reqs] == [0, 1, 2, 3, 4]
    prng = random.Random(spec.seed * 1_000_003 - 1)  # the seeding the kind documents
    eager = [factory.make(12, prng) for _ in range(5)]
    assert [r.prompt.startswith(eager[i]) for i, r in enumerate(reqs)] == [True] * 5
    small = generate(spec.model_copy(update={"num_prefixes": 2}), 4, factory)
    assert [r.prompt[: len(eager[r.prefix_id])] for r in small] == [eager[0], eager[1], eager[0], eager[1]]


def test_ca_file_that_is_a_directory(tmp_path):
    sweep = sweep_with(engine={**OPENAI, "base_url": "https://127.0.0.1:9", "ca_file": str(tmp_path)})
    assert _run_bad(tmp_path, sweep) == f"error: engine.ca_file: {tmp_path}: is a directory"


def test_valid_json_lines_still_read(tmp_path):
    rows = [{"timestamp": 1, "input_len": 8, "output_len": 4, "prefix_id": 2}, {"timestamp": 0.5, "input_len": 3,
                                                                                 "output_len": 1}]
    path = _trace(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_trace(path) == [(0.5, 3, 1, None), (1.0, 8, 4, 2)]


def test_until_cap_counts_toward_the_send_time():
    """`until` may keep sending up to max_requests: 1 req/s with a cap of 1e6 is ~11.6 days, refused (a bound on
    num_requests alone let it through)."""
    lp = LoadPoint(request_rate=1.0, num_requests=10, until={"throughput_rel_ci": 0.05, "max_requests": 10**6})
    assert send_time_s(lp) == pytest.approx(10**6)
    with pytest.raises(UserInputError, match="request_rate 1"):
        check_send_time(lp)
