"""Bad sweep files of issue 18, defined once: tests/unit/cli/test_bad_input_run.py asserts on them in-process,
scripts/bad_input_table.py runs them through the installed CLI and prints the table for a reader.

A plain module, not a test file (pytest does not collect it); both import it as `tests.unit.cli.bad_sweeps`
(the repository root is on sys.path under `python -m pytest`, and the script puts it there itself).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from bench.sweep.store import RunStore

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, requests fail at once

BASE: dict[str, Any] = {
    "name": "bad",
    "engine": {"kind": "vllm"},
    "hardware": {"gpu": "cpu-2core", "tier": "on-demand"},
    "server": {"model": "glm-4.5-tiny", "max_model_len": 512},
    "load": {"concurrency": [1], "num_requests": 2, "warmup_requests": 0},
    "workloads": [{"name": "w", "kind": "fixed", "input_len": 16, "output_len": 8}],
}
WL = BASE["workloads"][0]
OPENAI = {"kind": "openai", "base_url": CLOSED}
DROP = object()  # as a value in sweep_with(): delete the key


def sweep_with(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes, `load__concurrency=[2]` sets load.concurrency (DROP deletes the key)."""
    c = copy.deepcopy(BASE)
    for dotted, v in changes.items():
        *parents, last = dotted.split("__")
        node = c
        for p in parents:
            node = node.setdefault(p, {})
        if v is DROP:
            node.pop(last, None)
        else:
            node[last] = v
    return c


def write_run_dir(parent: Path, *, error: str = "boom", rows: bool = True) -> Path:
    """A run directory as the harness writes it: sweep.yaml and, with `rows`, two failed rows (concurrency 1, 2)."""
    run = parent / "run"
    (run / "rows").mkdir(parents=True)
    (run / "sweep.yaml").write_text(yaml.safe_dump(BASE))
    if rows:
        store = RunStore(run)
        for i in range(2):
            store.write_point({"run_id": "run", "point_id": f"p{i}", "point_index": i, "status": "failed",
                               "error": error, "model": "glm-4.5-tiny", "concurrency": i + 1})
        store.write_table(store.rows())  # as a finished run leaves it (the table is written when the run ends)
    return run


# label -> (sweep, fragments the one-line error must contain); env var MAAS_BENCH_TEST_UNSET_KEY must be unset
SWEEP_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    # duplicates: naming the axis and the value
    "concurrency twice": (sweep_with(load__concurrency=[1, 1]), ["load.concurrency", "1", "twice"]),
    "request_rate twice": (sweep_with(load__concurrency=[], load__request_rate=[2, 2.0]),
                           ["load.request_rate", "twice"]),
    "workload listed twice": (sweep_with(workloads=[WL, WL]), ["'w'", "unique"]),
    "workload name reused": (sweep_with(workloads=[WL, {**WL, "input_len": 32}]), ["'w'", "unique"]),
    "server axis value twice": (sweep_with(server__dtype=["bfloat16", "bfloat16"]), ["server.dtype", "twice"]),
    # late validation, now early
    "input+output > max_model_len": (sweep_with(workloads=[{**WL, "input_len": 500, "output_len": 64}]),
                                     ["564", "max_model_len", "512"]),
    "prefix > max_model_len": (sweep_with(workloads=[{"name": "p", "kind": "prefix", "prefix_len": 400,
                                                      "input_len": 100, "output_len": 64}]), ["564", "max_model_len"]),
    "base_url no scheme": (sweep_with(engine={**OPENAI, "base_url": "localhost:8000"}),
                           ["engine.base_url", "http(s)"]),
    "base_url ftp": (sweep_with(engine={**OPENAI, "base_url": "ftp://host/v1"}),
                     ["engine.base_url", "ftp://host/v1"]),
    "base_url markup": (sweep_with(engine={**OPENAI, "base_url": "localhost:8000/[/v1]"}), ["[/v1]"]),
    "api_key_env unset": (sweep_with(engine={**OPENAI, "api_key_env": "MAAS_BENCH_TEST_UNSET_KEY"}),
                          ["MAAS_BENCH_TEST_UNSET_KEY", "not set"]),
    # path safety
    "name escapes": (sweep_with(name="../../escape"), ["name", "A-Z"]),
    "name empty": (sweep_with(name=""), ["name"]),
    "name separator": (sweep_with(name="a/b"), ["name"]),
    "name leading dash": (sweep_with(name="-x"), ["name"]),
    # tracebacks and prefixes
    "quantization []": (sweep_with(server__quantization=[]), ["server.quantization", "empty list"]),
    "max_num_seqs 0": (sweep_with(server__max_num_seqs=0), ["server.max_num_seqs"]),
    "quantization bad": (sweep_with(server__quantization="int3"), ["server.quantization", "int3"]),
    "dtype bad": (sweep_with(server__dtype="fp7"), ["server.dtype", "bfloat16"]),
    "max_model_len bad": (sweep_with(server__max_model_len="abc"), ["server.max_model_len"]),
    # issue 25: bounds where no server states one, checked before anything starts (bench/sweep/prepare.py)
    "openai input_len 1e9": (sweep_with(engine=OPENAI, workloads=[{**WL, "input_len": 10**9}]),
                             ["'w'", "input_len is 1,000,000,000", "MAX_REQUEST_TOKENS"]),
    "openai multiturn turns 1e9": (sweep_with(engine=OPENAI, workloads=[{**WL, "kind": "multiturn", "turns": 10**9}]),
                                   ["'w'", "tokens per request", "MAX_REQUEST_TOKENS"]),
    "block_tokens 1e9": (sweep_with(engine=OPENAI, workloads=[{**WL, "block_tokens": 10**9}]),
                         ["block_tokens", "MAX_REQUEST_TOKENS"]),
    "ca_file missing": (sweep_with(engine={**OPENAI, "base_url": "https://127.0.0.1:9", "ca_file": "/nonexistent"}),
                        ["engine.ca_file", "/nonexistent", "no such file"]),
    "ca_file not PEM": (sweep_with(engine={**OPENAI, "base_url": "https://127.0.0.1:9", "ca_file": __file__}),
                        ["engine.ca_file", "bad_sweeps.py", "not a usable PEM CA bundle"]),
    "request_rate 1e-9": (sweep_with(load__concurrency=[], load__request_rate=[1e-9]),
                          ["request_rate 1e-09", "MAX_POINT_SEND_S"]),
    "duration_s 1e9": (sweep_with(engine=OPENAI, load__duration_s=1e9), ["MAX_POINT_SEND_S"]),
    # found by tests/integration/test_fuzz.py: a single float was a TypeError traceback
    "concurrency 1.0": (sweep_with(load__concurrency=1.0), ["concurrency", "positive integers", "1.0"]),
}
