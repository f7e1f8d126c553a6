"""THE engine registry: `engine.kind` from a sweep file -> the class that serves it.

Why a module of its own: `base.py` defines the protocol and `register_engine`, which every engine
module imports, so the step that imports every engine module cannot live there without an import
cycle. Nothing else in bench/ branches on `engine.kind`: callers create engines here and ask the
class for capabilities (`uses_local_gpus`, `batch`, ...) and its hooks (`preflight`, `stop_stale`).

How a kind gets here: its module calls `bench.engines.base.register_engine` when imported, and this
module imports every module of the bench.engines package (so a new engine is one new module). The
config layer validates a sweep without importing engines (imports point down), so it keeps its own
table of kinds (`bench.config.engine_spec.ENGINE_KINDS`; a new kind's module registers there through
`register_engine(config=...)`); this module checks at import that both name the same kinds.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import bench.engines
from bench.config.sweep import ENGINE_KINDS, EngineSpec, ServerSpec
from bench.engines.base import ENGINES, Engine

for _mod in sorted(m.name for m in pkgutil.iter_modules(bench.engines.__path__)):
    if _mod != "registry":  # every engine module registers its class on import
        importlib.import_module(f"bench.engines.{_mod}")

if set(ENGINES) != set(ENGINE_KINDS):  # pragma: no cover - caught by tests/unit/engines/test_engines.py first
    raise RuntimeError(f"engine kinds differ: registry {sorted(ENGINES)} vs config {sorted(ENGINE_KINDS)}")


def engine_class(kind: str) -> type[Engine]:
    try:
        return ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(ENGINES)}") from None


def create_engine(spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> Engine:
    """The engine of one server group (not started yet)."""
    return engine_class(engine.kind)(spec, engine, log_path, on_gpu)
