"""The package layout of docs/architecture.md: imports point down the layer order and never form a cycle.

The order is the rule of the shared ARCHITECTURE.md, "imports point down the table (cli ->
sweep/report/econ/planner -> measure/engines -> config)", lowest first (docs/architecture.md's layer
column shows the same numbers):

    0  errors, atomic, units           the package-root modules: they import nothing from bench
    1  config
    2  measure
    3  engines, sim
    4  sweep, report, econ, planner    ONE tier: the slash joins peers, and peers may import each other
    5  cli, and bench.__main__ (its entry point)

A module may import its own layer or a lower one. Where the rule's line is not precise enough alone:
- measure sits below engines. The `Engine` protocol hands out `client_config`, a
  `bench.measure.client.ClientConfig`, so engines import measure; measure never imports an engine (the
  word vocabulary that the tiny models' tokenizer and the prompt factory share lives in config/vocab.py).
- sim is not on the rule's line: it is a stand-in for an engine (an OpenAI-compatible server), so it
  sits on the engines layer.
- Inside a tier, the "must not" column of the layer table forbids some imports between peers; FORBIDDEN
  holds the ones that are imports: sweep must not compute economics (no econ), econ must not read files
  (no sweep: its store reads results), engines must not know about workloads (no workload modules of
  measure), report must not recompute metrics (no measure.metrics), measure must not write files (no
  atomic).

The graph is built from the source text (every `import bench.x` / `from bench.x import y`, including
imports inside functions), so a lazy import cannot hide a cycle or an upward dependency.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Lower number = lower layer. A module may import its own layer or any lower one.
LAYER = {
    "errors": 0,
    "atomic": 0,
    "units": 0,
    "config": 1,
    "measure": 2,
    "engines": 3,
    "sim": 3,
    "sweep": 4,
    "report": 4,
    "econ": 4,
    "planner": 4,
    "cli": 5,
    "__main__": 5,
}

# Imports the layer table's "must not" column forbids even where the order allows them:
# (importing package, imported module or package) -> the rule.
FORBIDDEN = {
    ("sweep", "bench.econ"): "sweep must not compute economics",
    ("econ", "bench.sweep"): "econ must not read files",
    ("engines", "bench.measure.workloads"): "engines must not know about workloads",
    ("engines", "bench.measure.kinds"): "engines must not know about workloads",
    ("engines", "bench.measure.prompts"): "engines must not know about workloads",
    ("engines", "bench.measure.traces"): "engines must not know about workloads",
    ("engines", "bench.measure.sessions"): "engines must not know about workloads",
    ("report", "bench.measure.metrics"): "report must not recompute metrics",
    ("measure", "bench.atomic"): "measure must not write files",
}

# Temporary allowances: (importing module, imported module) edges that break a rule above and are being
# fixed; each names the change that removes it. Empty when the code follows the rules.
ALLOWED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(BENCH.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in BENCH.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(module: str) -> int | None:
    pkg = _package(module)
    return LAYER.get(pkg) if pkg is not None else None


def violations(module: str, targets: set[str]) -> list[str]:
    """Why each import of `module` breaks the layer rules (upward, or forbidden by a "must not")."""
    here, pkg = _layer(module), _package(module)
    out = []
    for t in sorted(targets):
        if (module, t) in ALLOWED:
            continue
        lt = _layer(t)
        if here is not None and lt is not None and lt > here:
            out.append(f"{t}: a higher layer ({_package(t)} {lt} > {pkg} {here})")
        for (src, dst), rule in FORBIDDEN.items():
            if src == pkg and (t == dst or t.startswith(dst + ".")):
                out.append(f"{t}: {rule}")
    return out


def test_find_cycle_detects_a_known_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_encoded_order_is_the_architecture_rule() -> None:
    # cli -> sweep/report/econ/planner -> measure/engines -> config, peers of a tier on one layer
    assert LAYER["cli"] > LAYER["sweep"] == LAYER["report"] == LAYER["econ"] == LAYER["planner"]
    assert LAYER["planner"] > LAYER["engines"] > LAYER["measure"] > LAYER["config"] > LAYER["errors"]
    assert not violations("bench.report.data", {"bench.sweep.store", "bench.econ.margin"})  # peers
    assert not violations("bench.planner.estimate", {"bench.econ.cost"})
    assert violations("bench.measure.prompts", {"bench.engines.modeldir"})  # measure reaching up
    assert violations("bench.config.base", {"bench.engines.process"})
    assert violations("bench.sweep.session", {"bench.econ.cost"}) == [
        "bench.econ.cost: sweep must not compute economics"]
    assert violations("bench.engines.base", {"bench.measure.workloads"})
    assert not violations("bench.engines.base", {"bench.measure.client"})


def test_bench_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_package_and_root_module_has_a_layer() -> None:
    packages = {p.name for p in BENCH.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    root_modules = {p.stem for p in BENCH.glob("*.py") if p.stem != "__init__"}
    missing = (packages | root_modules) - set(LAYER)
    assert not missing, f"packages or modules without a layer: {sorted(missing)}"


def test_temporary_allowances_are_still_needed() -> None:
    graph = import_graph()
    stale = [edge for edge in ALLOWED if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"drop these allowances, the import is gone: {stale}"


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_point_down(module: str) -> None:
    bad = violations(module, import_graph()[module])
    assert not bad, f"{module} breaks the layer rules: {bad}"
