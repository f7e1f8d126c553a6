"""THE engine registry: `engine.kind` from a sweep file -> the class that serves it.

Why a module of its own: `base.py` defines the protocol that every engine module imports, so the
table that imports every engine module cannot live there without an import cycle. Nothing else in
bench/ branches on `engine.kind`: callers create engines here and ask them for capabilities.

The config layer validates a sweep without importing engines (imports point down), so it keeps
its own table of what each kind needs from the sweep file (`bench.config.sweep.ENGINE_KINDS`); this
module checks at import that both name the same kinds, and a unit test checks it too.
"""

from __future__ import annotations

from pathlib import Path

from bench.config.sweep import ENGINE_KINDS, EngineSpec, ServerSpec
from bench.engines.base import Engine
from bench.engines.openai import OpenAIEngine
from bench.engines.vllm_offline import VllmOfflineEngine
from bench.engines.vllm_server import VllmEngine

ENGINES: dict[str, type[Engine]] = {cls.kind: cls for cls in (VllmEngine, VllmOfflineEngine, OpenAIEngine)}

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
