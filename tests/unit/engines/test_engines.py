"""The engine registry: one class per `engine.kind`, the same kinds the config accepts, and no
`kind ==` branching anywhere else in bench/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.config.sweep import ENGINE_KINDS, EngineSpec
from bench.engines.base import Engine
from bench.engines.openai import OpenAIEngine
from bench.engines.registry import ENGINES, create_engine, engine_class
from bench.engines.vllm_offline import VllmOfflineEngine
from bench.engines.vllm_server import VllmEngine

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_registry_and_config_name_the_same_kinds():
    from bench.planner import virtual  # noqa: F401 - the virtual kind registers from the planner layer

    assert set(ENGINES) == set(ENGINE_KINDS) == {"vllm", "vllm-offline", "openai", "virtual"}
    with pytest.raises(ValidationError, match="Input should be 'vllm', 'openai', 'vllm-offline' or 'virtual'"):
        EngineSpec(kind="tgi")  # the registered kinds, named as pydantic names a Literal's values


def test_an_engine_kind_is_one_module_that_registers_its_class_and_schema(monkeypatch):
    """What bench/engines/virtual.py (or any new kind) does: a class, its config facts, its engine: schema."""
    from pydantic import Field

    from bench.config import engine_spec
    from bench.config.sweep import Sweep
    from bench.engines import base
    from bench.engines.base import NoProcessEngine, register_engine

    monkeypatch.setattr(engine_spec, "ENGINE_KINDS", dict(engine_spec.ENGINE_KINDS))
    monkeypatch.setattr(base, "ENGINES", dict(base.ENGINES))

    class ToySpec(EngineSpec):
        seed: int = Field(0, ge=0)

    @register_engine(config=engine_spec.EngineKind(pins_output_length=True, needs_base_url=False,
                                                   one_batch_per_point=False, schema=ToySpec))
    class ToyEngine(NoProcessEngine):
        kind = "toy"
        starts_server = uses_local_gpus = batch = False

    s = Sweep(name="t", engine={"kind": "toy", "seed": 3}, server={"model": "glm-4.5-tiny"},
              load={"concurrency": [1]})
    assert isinstance(s.engine, ToySpec) and s.model_dump()["engine"]["seed"] == 3
    assert base.ENGINES["toy"] is ToyEngine
    with pytest.raises(ValidationError, match="engine.seed"):
        Sweep(name="t", engine={"kind": "toy", "seed": -1}, server={"model": "m"}, load={"concurrency": [1]})


def test_each_kind_maps_to_its_class_with_its_capabilities():
    # (class, starts a server, runs on this node's GPUs, one batch per point), by hand
    expected = {"vllm": (VllmEngine, True, True, False), "vllm-offline": (VllmOfflineEngine, False, True, True),
                "openai": (OpenAIEngine, False, False, False)}
    for kind, (cls, starts, local, batch) in expected.items():
        assert engine_class(kind) is cls
        assert (cls.starts_server, cls.uses_local_gpus, cls.batch) == (starts, local, batch)
    with pytest.raises(ValueError, match="unknown engine kind 'tgi'"):
        engine_class("tgi")


def test_config_capabilities_by_hand():
    assert EngineSpec(kind="vllm").pin_output_length is True
    assert EngineSpec(kind="openai", base_url="http://x").pin_output_length is False
    assert EngineSpec(kind="openai", base_url="http://x", ignore_eos=True).pin_output_length is True
    with pytest.raises(ValueError, match="engine.base_url is required when engine.kind is 'openai'"):
        EngineSpec(kind="openai")


def test_openai_engine_client_config_and_key_from_env(tmp_path, monkeypatch):
    from bench.config.sweep import ServerSpec
    from bench.errors import UserInputError

    spec = ServerSpec(model="glm-4.5-tiny")
    eng = EngineSpec(kind="openai", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY", served_model_name="m")
    engine = create_engine(spec, eng, tmp_path / "log", on_gpu=False)
    assert isinstance(engine, OpenAIEngine) and isinstance(engine, Engine)
    monkeypatch.setenv("MY_KEY", "sk-test")
    from bench.engines.base import EngineStartError

    with pytest.raises(EngineStartError, match="cannot confirm the endpoint serves model 'm'"):
        engine.start()  # nothing listens on port 9: the model check (GET /v1/models) fails before any point
    assert engine.alive() and engine.pid is None and engine.startup_s == 0.0
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(UserInputError, match="MY_KEY is not set"):
        engine.client_config("chat", 5.0)
    monkeypatch.setenv("MY_KEY", "sk-test")
    cfg = engine.client_config("chat", 5.0)
    assert (cfg.base_url, cfg.model, cfg.endpoint, cfg.api_key, cfg.timeout_s, cfg.ignore_eos) == (
        "http://127.0.0.1:9/v1", "m", "chat", "sk-test", 5.0, False)
    assert cfg.kernel_timestamps is True  # the default: kernel receive stamps where the platform has them
    loop = create_engine(spec, eng.model_copy(update={"kernel_timestamps": False}), tmp_path / "log2", on_gpu=False)
    assert loop.client_config("chat", 5.0).kernel_timestamps is False  # engine.kernel_timestamps reaches the client


def test_no_engine_kind_string_checks_outside_the_registry():
    """`engine.kind` is compared to a string literal nowhere in bench/ (config's capability table and the
    registry map kinds to behaviour; everything else asks for a capability)."""
    offenders = []
    for path in BENCH.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            kinds = [s for s in sides if isinstance(s, ast.Attribute) and s.attr == "kind"
                     and ("engine" in ast.unparse(s.value).lower() or path.name == "sweep.py")]
            literals = [s for s in sides if isinstance(s, ast.Constant) and s.value in ENGINE_KINDS]
            if kinds and literals:
                offenders.append(f"{path.relative_to(BENCH.parent)}:{node.lineno}")
    assert offenders == []
