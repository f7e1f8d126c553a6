"""Run every bad input of issue 18 (and more) through the real CLI and print a markdown table.

Each case runs `maas-bench` as a subprocess in a fresh temp dir with `--out <tmp>/out`, and the
table says: the exit code, the first line of stderr, how many stderr lines there were, and what
was written under --out. Bad input must give exit 2, one line, nothing written. Nothing here starts
a vLLM server (cases that would pass validation use engine kind openai on a closed port); run it
under `flock /tmp/vllm.lock` anyway, in case a regression lets a vllm case through validation.

    flock /tmp/vllm.lock .venv/bin/python scripts/bad_input_table.py [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXE = str(ROOT / ".venv" / "bin" / "maas-bench")
sys.path.insert(0, str(ROOT))
# the base sweep, its dotted-path editor and issue 18's sweep cases are shared with the unit test, so the
# table and the test cannot drift apart
from tests.unit.cli.bad_sweeps import BASE, DROP, OPENAI, SWEEP_CASES, sweep_with, write_run_dir  # noqa: E402


def sweep_file(sweep: dict[str, Any]) -> Callable[[Path], list[str]]:
    """A case that runs `maas-bench run` on this sweep."""
    def make(d: Path) -> list[str]:
        (d / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
        return ["run", str(d / "sweep.yaml")]
    return make


def cfg(**changes: Any) -> Callable[[Path], list[str]]:
    """A case whose sweep file is BASE with dotted-path changes (value DROP deletes the key)."""
    return sweep_file(sweep_with(**changes))


def raw(data: bytes, *extra: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "sweep.yaml").write_bytes(data)
        return ["run", str(d / "sweep.yaml"), *extra]
    return make


def base_yaml() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


def args(*a: str, setup: Callable[[Path], None] | None = None) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "sweep.yaml").write_text(base_yaml())
        if setup:
            setup(d)
        return [x.replace("{d}", str(d)) for x in a]
    return make


def with_trace(text: str | None, **changes: Any) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        if text is not None:
            (d / "trace.jsonl").write_text(text)
        wl = {"name": "t", "kind": "trace", "trace_path": str(d / "trace.jsonl")}
        return cfg(workloads=[wl], **changes)(d)
    return make


def fake_run(d: Path, *, parquet: bytes | None = None, rows: bool = False, error: str = "boom") -> Path:
    """A run directory as the harness writes it (two failed rows with `rows`), plus `parquet` as points.parquet."""
    run = write_run_dir(d, error=error, rows=rows)
    if parquet is not None:
        (run / "points.parquet").write_bytes(parquet)
    return run


def report_on(**kw: Any) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        return ["report", str(fake_run(d, **kw)), "--out", str(d / "out" / "report")]
    return make


def truncated_parquet(d: Path) -> bytes:
    import pandas as pd

    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(d / "x.parquet")
    return (d / "x.parquet").read_bytes()[:20]


CASES: list[tuple[str, Callable[[Path], list[str]], dict[str, str]]] = [
    # --- the config file itself
    ("config file missing", lambda d: ["run", str(d / "nope.yaml")], {}),
    ("config is a directory", lambda d: ["run", str(d)], {}),
    ("config not UTF-8 (0xff byte)", raw(b"name: bad\nserver: {model: \xff\xfe}\n"), {}),
    ("config with a NUL byte", raw(b"name: bad\x00\nload: {}\n"), {}),
    ("duplicate YAML key", raw(base_yaml().replace("name: bad", "name: bad\nname: other").encode()), {}),
    ("YAML syntax error", raw(b"name: [bad\n"), {}),
    ("empty config file", raw(b""), {}),
    ("config is a YAML list", raw(b"- a\n- b\n"), {}),
    ("unknown top-level field", cfg(nmae="x"), {}),
    ("typo server.max_num_seq", cfg(server__max_num_seq=4), {}),
    ("server.model missing", cfg(server__model=DROP), {}),
    ("load missing", cfg(load=DROP), {}),
    ("server is a list", cfg(server=["glm-4.5-tiny"]), {}),
    ("unknown model", cfg(server__model="no-such-model"), {}),
    # --- issue 18's sweep cases, as tests/unit/cli/test_bad_input_run.py asserts them
    *[(label, sweep_file(sweep), {}) for label, (sweep, _) in SWEEP_CASES.items()],
    # --- server axes
    ("server.max_model_len: -1", cfg(server__max_model_len=-1), {}),
    ("server.kv_cache_dtype invalid", cfg(server__kv_cache_dtype="int2"), {}),
    ("server.tensor_parallel_size: 0", cfg(server__tensor_parallel_size=0), {}),
    ("zip with unequal lengths", cfg(server__dtype=["bfloat16", "float32"], server__max_num_seqs=[1, 2, 3],
                                     zip=[["dtype", "max_num_seqs"]]), {}),
    ("zip names a non-axis", cfg(zip=[["dtype", "nope"]]), {}),
    ("include unknown field", cfg(include=[{"nope": 1}]), {}),
    # --- load axes
    ("load.request_rate: [2, 2.0], no concurrency key", cfg(load__concurrency=DROP, load__request_rate=[2, 2.0]),
     {}),
    ("load.concurrency: 0", cfg(load__concurrency=0), {}),
    ("load.concurrency: [-1]", cfg(load__concurrency=[-1]), {}),
    ("load.concurrency: 'abc'", cfg(load__concurrency="abc"), {}),
    ("load.request_rate: .inf", cfg(load__concurrency=DROP, load__request_rate=float("inf")), {}),
    ("load.request_rate: .nan", cfg(load__concurrency=DROP, load__request_rate=float("nan")), {}),
    ("no concurrency, no request_rate", cfg(load__concurrency=DROP), {}),
    ("load.num_requests: 0", cfg(load__num_requests=0), {}),
    ("load.duration_s: .nan", cfg(load__duration_s=float("nan")), {}),
    ("load.timeout_s: -1", cfg(load__timeout_s=-1), {}),
    ("load.burstiness: 0", cfg(load__burstiness=0), {}),
    ("ramp_start_rate without ramp_s", cfg(load__ramp_start_rate=1.0), {}),
    # --- workloads
    ("workload kind unknown", cfg(workloads=[{"name": "w", "kind": "poisson"}]), {}),
    ("workload input_len: 0", cfg(workloads=[{"name": "w", "input_len": 0}]), {}),
    ("workload output_len: .inf", cfg(workloads=[{"name": "w", "output_len": float("inf")}]), {}),
    ("trace file missing", with_trace(None), {}),
    ("trace line malformed", with_trace('{"timestamp": 0, "input_len": 8, "output_len": 4}\nnot json\n'), {}),
    ("trace row without input_len", with_trace('{"timestamp": 0, "output_len": 4}\n'), {}),
    ("trace file empty", with_trace(""), {}),
    ("trace row > max_model_len", with_trace('{"timestamp": 0, "input_len": 600, "output_len": 4}\n'), {}),
    # --- engine
    ("engine.kind unknown", cfg(engine={"kind": "tgi"}), {}),
    ("openai without base_url", cfg(engine={"kind": "openai"}), {}),
    ("base_url http:// (no host)", cfg(engine={**OPENAI, "base_url": "http://"}), {}),
    ("base_url port out of range", cfg(engine={**OPENAI, "base_url": "http://h:99999"}), {}),
    ("engine.startup_timeout_s: .nan", cfg(engine={"kind": "vllm", "startup_timeout_s": float("nan")}), {}),
    ("vllm-offline with 2 concurrencies", cfg(engine={"kind": "vllm-offline"}, load__concurrency=[1, 2]), {}),
    # --- run name (a directory under --out)
    ("name: .hidden", cfg(name=".hidden"), {}),
    ("name: 200 characters", cfg(name="x" * 200), {}),
    # --- hardware, SLO
    ("hardware.gpu unknown", cfg(hardware={"gpu": "h900"}), {}),
    ("hardware.tier unknown", cfg(hardware={"gpu": "cpu-2core", "tier": "free"}), {}),
    ("hardware.usd_per_gpu_hour: -1", cfg(hardware={"usd_per_gpu_hour": -1}), {}),
    ("hardware.usd_per_gpu_hour: .nan", cfg(hardware={"usd_per_gpu_hour": float("nan")}), {}),
    ("slo.ttft_ms: -5", cfg(slo={"ttft_ms": -5}), {}),
    # --- flags
    ("--executor bogus", args("run", "{d}/sweep.yaml", "--executor", "bogus", "--out", "{d}/out"), {}),
    ("--address without ray", args("run", "{d}/sweep.yaml", "--address", "auto", "--out", "{d}/out"), {}),
    ("--keep-failed without --resume", args("run", "{d}/sweep.yaml", "--keep-failed", "--out", "{d}/out"), {}),
    ("--resume missing dir", args("run", "{d}/sweep.yaml", "--resume", "{d}/nope"), {}),
    ("--resume dir without sweep.yaml", args("run", "{d}/sweep.yaml", "--resume", "{d}/out"), {}),
    ("--config-dir not a dir", args("--config-dir", "{d}/nope", "models"), {}),
    ("unknown command", args("bogus"), {}),
    ("unknown option", args("run", "{d}/sweep.yaml", "--bogus"), {}),
    # --- report
    ("report: no such dir", lambda d: ["report", str(d / "nope")], {}),
    ("report: given a file (sweep.yaml)", args("report", "{d}/sweep.yaml"), {}),
    ("report: given a points.parquet", lambda d: ["report", str(fake_run(d, rows=True) / "points.parquet")], {}),
    ("report: empty points.parquet, no rows", report_on(parquet=b""), {}),
    ("report: truncated points.parquet, no rows", lambda d: report_on(parquet=truncated_parquet(d))(d), {}),
    ("report: truncated points.parquet + rows", lambda d: report_on(parquet=truncated_parquet(d), rows=True)(d),
     {}),
    ("report: error text with [/path]", report_on(rows=True, error="HTTP 404 at [/v1/completions] [/red]"), {}),
    ("report --utilization nan", lambda d: ["report", str(fake_run(d, rows=True)), "--utilization", "nan"], {}),
    ("report --slo garbage", lambda d: ["report", str(fake_run(d, rows=True)), "--slo", "ttft<<5"], {}),
    ("cost --results a text file", args("cost", "--results", "{d}/sweep.yaml"), {}),
]


def corrupt_resume(d: Path) -> list[str]:
    """A real (failing, closed-port) run, one row file torn, then --resume: names the file, re-measures."""
    c = copy.deepcopy(BASE)
    c["engine"] = OPENAI
    (d / "sweep.yaml").write_text(yaml.safe_dump(c))
    subprocess.run([EXE, "run", str(d / "sweep.yaml"), "--out", str(d / "out")], capture_output=True, timeout=120)
    run = next((d / "out").iterdir())
    row = next((run / "rows").glob("*.json"))
    row.write_text(row.read_text()[:15])
    (d / "resume-target").write_text(str(run))
    return ["run", str(d / "sweep.yaml"), "--resume", str(run)]


CASES.append(("resume with a corrupt rows/*.json", corrupt_resume, {}))


# --- issue 25: validation up front, strict trace types, traversal, the remaining tracebacks ----------------
def with_trace_bytes(data: bytes, kind: str = "trace", **changes: Any) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "trace.jsonl").write_bytes(data)
        return cfg(workloads=[{"name": "t", "kind": kind, "trace_path": str(d / "trace.jsonl")}], **changes)(d)
    return make


def evil_twin(twin: str) -> Callable[[Path], list[str]]:
    """--config-dir with a model file whose tiny twin is named `twin`, and a sweep that uses it."""
    def make(d: Path) -> list[str]:
        doc = yaml.safe_load((ROOT / "configs" / "models" / "glm-4.5.yaml").read_text())
        doc["name"], doc["tiny"]["name"], doc["tiny_variants"] = "evil", twin, []
        (d / "mine" / "models").mkdir(parents=True)
        (d / "mine" / "models" / "evil.yaml").write_text(yaml.safe_dump(doc))
        (d / "sweep.yaml").write_text(yaml.safe_dump(sweep_with(server__model=twin)))
        return ["--config-dir", str(d / "mine"), "run", str(d / "sweep.yaml"), "--out", str(d / "out")]
    return make


def deep_config_dir(d: Path) -> list[str]:
    (d / "mine").mkdir()
    (d / "mine" / "hardware.yaml").write_text("gpus: " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "sweep.yaml").write_text(base_yaml())
    return ["--config-dir", str(d / "mine"), "run", str(d / "sweep.yaml"), "--out", str(d / "out")]


def string_number_row(command: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        run = fake_run(d, rows=True)
        row = next((run / "rows").glob("*.json"))
        doc = json.loads(row.read_text())
        doc["completed"] = "10"
        row.write_text(json.dumps(doc))
        (run / "points.parquet").unlink()  # else the (fresh) table is read and the row file is not
        if command == "report":
            return ["report", str(run), "--out", str(d / "out" / "report")]
        return ["margin", "--results", str(run), "--price", "glm-4.5@zai"]
    return make


ROW = b'{"timestamp": 0, "input_len": 8, "output_len": 4}\n'
CASES += [
    ("trace input_len: 3.9", with_trace_bytes(ROW + b'{"timestamp": 1, "input_len": 3.9, "output_len": 4}\n'), {}),
    ("trace input_len: true", with_trace_bytes(b'{"timestamp": 0, "input_len": true, "output_len": 4}\n'), {}),
    ('trace output_len: "4"', with_trace_bytes(b'{"timestamp": 0, "input_len": 8, "output_len": "4"}\n'), {}),
    ("trace input_len: Infinity", with_trace_bytes(b'{"timestamp": 0, "input_len": Infinity, "output_len": 4}\n'),
     {}),
    ("trace not UTF-8 (line 2)", with_trace_bytes(ROW + b'{"timestamp": 1, "x": "\xff"}\n'), {}),
    ("trace 1e18 tokens (openai)", with_trace_bytes(
        b'{"timestamp": 0, "input_len": 1000000000000000000, "output_len": 4}\n', engine=OPENAI), {}),
    ("mooncake row > max_model_len", with_trace_bytes(
        b'{"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [1]}\n', kind="mooncake"), {}),
    ("mooncake output_length: 3.9", with_trace_bytes(
        b'{"timestamp": 0, "input_length": 6, "output_length": 3.9, "hash_ids": [1]}\n', kind="mooncake"), {}),
    ("--config-dir twin named ../escape-tiny", evil_twin("../escape-tiny"), {}),
    ("--config-dir twin named /tmp/abs-tiny", evil_twin("/tmp/maas-bench-abs-tiny"), {}),
    ("--config-dir hardware.yaml 5000 levels deep", deep_config_dir, {}),
    ("sim --port 70000", lambda d: ["sim", "--port", "70000"], {}),
    ('report: a row with completed: "10"', string_number_row("report"), {}),
    ('margin --results: a row with completed: "10"', string_number_row("margin"), {}),
]


def run_case(make: Callable[[Path], list[str]], env_extra: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="badinput-") as tmp:
        d = Path(tmp)
        (d / "out").mkdir()
        before = {p for p in (d / "out").rglob("*")}
        argv = make(d)
        if argv and argv[0] == "run" and "--out" not in argv and "--resume" not in argv:
            argv += ["--out", str(d / "out")]
        before = {p for p in (d / "out").rglob("*")}
        env = {**os.environ, **env_extra}
        env.pop("MAAS_BENCH_TEST_UNSET_KEY", None)  # the shared api_key_env case names it
        p = subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=300, cwd=d, env=env)
        written = sorted(str(x.relative_to(d / "out")) for x in set((d / "out").rglob("*")) - before
                         if x.is_file())
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        first = lines[0] if lines else (p.stdout.strip().splitlines() or [""])[0]
        return {"code": p.returncode, "first": first.replace(str(d), "<tmp>"), "lines": len(lines),
                "written": written, "traceback": "Traceback" in p.stderr}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    print("| # | input | exit | stderr lines | first line | written under --out |")
    print("|---|---|---|---|---|---|")
    for i, (label, make, env) in enumerate(CASES, 1):
        if a.only and a.only not in label:
            continue
        r = run_case(make, env)
        results.append({"case": label, **r})
        w = ", ".join(r["written"][:3]) + (" ..." if len(r["written"]) > 3 else "") if r["written"] else "nothing"
        first = r["first"].replace("|", "\\|")[:160]
        print(f"| {i} | {label} | {r['code']} | {r['lines']} | `{first}` | {w} |", flush=True)
    if a.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
