"""The package layout of ARCHITECTURE.md: imports point down the layer table and never form a cycle.

The graph is built from the source text (every `import bench.x` / `from bench.x import y`, including
imports inside functions), so a lazy import cannot hide a cycle or an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Lower number = lower layer. A module may import its own layer or any lower one.
LAYER = {
    "errors": 0,
    "atomic": 0,
    "config": 1,
    "engines": 2,
    "measure": 2,
    "sim": 2,
    "planner": 3,
    "econ": 3,
    "sweep": 4,
    "report": 5,
    "cli": 6,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(BENCH.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_find_cycle_detects_a_known_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bench_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in BENCH.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYER), f"packages without a layer: {sorted(packages - set(LAYER))}"


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_point_down(module: str) -> None:
    here = _layer(module)
    if here is None:
        return
    upward = [t for t in import_graph()[module] if (lt := _layer(t)) is not None and lt > here]
    assert not upward, f"{module} imports a higher layer: {upward}"
