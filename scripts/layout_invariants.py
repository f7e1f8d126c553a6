"""Dump what a layout refactor must not change, for the source tree on PYTHONPATH.

For every configs/sweeps/*.yaml: the load_sweep result (or its one-line error), the expanded
server specs, the point ids, the request hashes of each workload (the first requests of three
seed offsets, prompts built from a fixed word vocabulary), and the base columns of each point's
row; then one workload of every kind (trace and mooncake from small files), the one-line errors of
the bad-sweep table (tests/unit/cli/bad_sweeps.py) through the CLI, `--help` of every command and
`models --json`. Run it on two trees and diff:

    git worktree add /tmp/base HEAD
    PYTHONPATH=/tmp/base .venv/bin/python scripts/layout_invariants.py > /tmp/before.txt
    PYTHONPATH=. .venv/bin/python scripts/layout_invariants.py > /tmp/after.txt
    diff /tmp/before.txt /tmp/after.txt

Nothing here starts a server: every bad sweep fails validation first (the base sweep is checked
to fail-or-pass before any run is attempted: passing cases run only on the closed discard port).
Paths of temporary files are replaced by <tmp> so that two runs compare.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]  # configs and tests come from this checkout, code from PYTHONPATH
# an editable install's finder would answer `import bench` before PYTHONPATH is searched: drop it
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
os.environ.setdefault("COLUMNS", "120")
os.environ.pop("MAAS_BENCH_TEST_UNSET_KEY", None)


def h(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def req_dict(r: Any) -> Any:
    """A request (RequestSpec) or a multiturn session (its turns and first request) as plain data."""
    if dataclasses.is_dataclass(r) and type(r).__name__ == "Session":
        return {"id": r.session_id, "system": r.system_text,
                "turns": [dataclasses.asdict(t) for t in r.turns], "first": dataclasses.asdict(r.request(0))}
    return dataclasses.asdict(r)


def request_hashes(wl: Any, factory: Any, n: int = 12) -> list[str]:
    from bench.measure.workloads import iter_requests

    return [h([req_dict(r) for r in islice(iter_requests(wl, factory, seed_offset=off), n)])
            for off in (0, 1, 10_000)]


def dump_sweeps(out: list[str]) -> None:
    from bench.config.sweep import load_sweep
    from bench.errors import UserInputError
    from bench.measure.workloads import PromptFactory
    from bench.sweep.session import base_row

    factory = PromptFactory.for_vocab_size(2048)
    for path in sorted((REPO / "configs" / "sweeps").glob("*.yaml")):
        rel = path.relative_to(REPO)
        out.append(f"== {rel}")
        try:
            sweep = load_sweep(rel)
        except UserInputError as e:
            out.append(f"load error: {e}")
            continue
        out.append("sweep dump " + h(sweep.model_dump(mode="json")))
        for s in sweep.server_specs():
            out.append(f"server {s.server_hash} {json.dumps(s.model_dump(mode='json'), sort_keys=True)}")
        points = sweep.points()
        out.append("points " + " ".join(p.point_id for p in points))
        for i, p in enumerate(points):
            row = base_row(sweep, p, i, "RUN", 1.5, False)
            out.append(f"row {i} {h(list(row))} {h(row)}")
        for wl in sweep.workloads:
            out.append(f"workload {wl.name} {wl.kind} " + " ".join(request_hashes(wl, factory)))


def dump_kinds(out: list[str], tmp: Path) -> None:
    from bench.config.sweep import WorkloadSpec, max_request_tokens
    from bench.measure.workloads import PromptFactory

    factory = PromptFactory.for_vocab_size(2048)
    trace = tmp / "trace.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": i * 0.5, "input_len": 20 + 7 * i, "output_len": 5 + i,
                                         **({"prefix_id": i % 2} if i % 3 else {})}) + "\n" for i in range(9)))
    cases = {
        "fixed": {"kind": "fixed"}, "ranged": {"kind": "ranged", "range_ratio": 0.5},
        "chat": {"kind": "chat"}, "prefix": {"kind": "prefix", "reuse_ratio": 0.6},
        "prefix-chat": {"kind": "prefix", "endpoint": "chat"},
        "trace": {"kind": "trace", "trace_path": str(trace)},
        "mooncake": {"kind": "mooncake", "trace_path": str(REPO / "configs/traces/mooncake-synthetic.jsonl")},
        "multiturn": {"kind": "multiturn", "turns": 3, "turns_range_ratio": 0.5, "range_ratio": 0.3,
                      "system_prompt_len": 40, "think_time_s": 1.0, "think_time_dist": "exponential"},
        "multiturn-chat": {"kind": "multiturn", "endpoint": "chat"},
        "preset-agentic": {"preset": "agentic", "turns": 2},
        "preset-8k1k": {"preset": "8k1k", "input_len": 64, "output_len": 8},
    }
    for name, kw in cases.items():
        wl = WorkloadSpec(name=name, seed=3, **kw)
        dump = json.dumps(wl.model_dump(mode="json"), sort_keys=True).replace(str(tmp), "<tmp>")
        out.append(f"kind {name} max_tokens={max_request_tokens(wl)} {h(dump)} " + " ".join(
            request_hashes(wl, factory, n=6)))


def dump_cli(out: list[str], tmp: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli.app import app

    sys.path.append(str(REPO))
    from tests.unit.cli.bad_sweeps import CLOSED, OPENAI, SWEEP_CASES, WL, sweep_with

    trace = tmp / "bad-trace.jsonl"
    trace.write_text('{"timestamp": 0, "input_len": 8, "output_len": 4}\nnot json\n')
    long_trace = tmp / "long-trace.jsonl"
    long_trace.write_text('{"timestamp": 0, "input_len": 600, "output_len": 4}\n')
    moon = tmp / "bad-moon.jsonl"
    moon.write_text('{"timestamp": 0, "input_length": 8}\n')
    extra = {  # more kinds of bad input, for the engine and workload registries
        "engine kind unknown": sweep_with(engine={"kind": "tgi"}),
        "engine field unknown": sweep_with(engine={"kind": "vllm", "bogus": 1}),
        "openai without base_url": sweep_with(engine={"kind": "openai"}),
        "openai speculative": sweep_with(engine=OPENAI, server__speculative={"method": "ngram",
                                                                            "num_speculative_tokens": 2}),
        "offline with rate": sweep_with(engine={"kind": "vllm-offline"}, load__concurrency=[],
                                        load__request_rate=[1]),
        "offline two concurrencies": sweep_with(engine={"kind": "vllm-offline"}, load__concurrency=[1, 2]),
        "workload kind unknown": sweep_with(workloads=[{**WL, "kind": "poisson"}]),
        "workload field unknown": sweep_with(workloads=[{**WL, "turnz": 3}]),
        "preset unknown": sweep_with(workloads=[{"preset": "nope"}]),
        "trace missing": sweep_with(workloads=[{"name": "t", "kind": "trace", "trace_path": str(tmp / "no.jsonl")}]),
        "trace bad row": sweep_with(workloads=[{"name": "t", "kind": "trace", "trace_path": str(trace)}]),
        "trace too long": sweep_with(workloads=[{"name": "t", "kind": "trace", "trace_path": str(long_trace)}]),
        "mooncake bad row": sweep_with(workloads=[{"name": "m", "kind": "mooncake", "trace_path": str(moon)}]),
        "multiturn too long": sweep_with(workloads=[{"name": "m", "kind": "multiturn", "turns": 9,
                                                     "input_len": 40, "output_len": 20}]),
        "hardware tier unknown": sweep_with(hardware={"gpu": "cpu-2core", "tier": "nope"}),
        "gpu unknown": sweep_with(hardware={"gpu": "z100"}),
        "model unknown": sweep_with(server__model="no-such-model"),
        "ngram draft model": sweep_with(server__speculative={"method": "draft_model", "num_speculative_tokens": 2}),
        "openai closed port ok": sweep_with(engine={"kind": "openai", "base_url": CLOSED}, load__num_requests=1),
    }
    cases = {**{k: v[0] for k, v in SWEEP_CASES.items()}, **extra}
    runner = CliRunner()
    for label in sorted(cases):
        sweep = cases[label]
        d = Path(tempfile.mkdtemp(dir=tmp))
        (d / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
        r = runner.invoke(app, ["run", str(d / "sweep.yaml"), "--out", str(d / "out")])
        text = r.stderr.strip() if r.exit_code == 2 else f"(not a validation error) {type(r.exception).__name__}"
        out.append(f"bad {label!r}: exit {r.exit_code} {text.replace(str(d), '<tmp>').replace(str(tmp), '<tmp>')}")
    import typer.main

    group = typer.main.get_command(app)
    out.append("help " + runner.invoke(app, ["--help"]).output)
    for name in sorted(group.commands):  # type: ignore[attr-defined]
        out.append(f"help {name}\n" + runner.invoke(app, [name, "--help"]).output)
    out.append("models --json " + h(runner.invoke(app, ["models", "--json"]).output))


def main() -> None:
    os.chdir(REPO)
    import bench

    print(f"# code from {Path(bench.__file__).parent.parent}", file=sys.stderr)
    out: list[str] = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        dump_sweeps(out)
        dump_kinds(out, tmp)
        dump_cli(out, tmp)
    print("\n".join(out))


if __name__ == "__main__":
    main()
