"""Prefill/decode disaggregation: the `server.disagg` field, the servers and kv-transfer-config it renders
(compared with command lines written out by hand from vLLM 0.32's KVTransferConfig keys and its P/D docs),
and the checks that refuse a bad deployment before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.server_spec import DisaggSpec, ServerSpec
from bench.config.sweep import EngineSpec, Sweep, load_sweep
from bench.engines.disagg import check_disagg, kv_transfer_config, plan_members, proxy_command
from bench.engines.registry import engine_class
from bench.engines.vllm_server import render_args
from bench.errors import UserInputError

ROOT = Path(__file__).resolve().parents[3]
COMMON = ("--served-model-name maas-bench-model --host 127.0.0.1 --port {port} --dtype bfloat16 --max-model-len 2048 "
          "--max-num-seqs 16 --tensor-parallel-size {tp} --load-format dummy --kv-cache-dtype auto "
          "--disable-uvicorn-access-log --no-enable-prefix-caching --enable-prompt-tokens-details --enforce-eager")


def _spec(disagg: dict, tp: int = 1) -> ServerSpec:
    return ServerSpec(model="glm-4.5-tiny", max_model_len=2048, max_num_seqs=16, tensor_parallel_size=tp,
                      disagg=disagg)


def _args(m, on_cpu: bool) -> str:
    return " ".join(render_args(m.spec, "/models/glm", m.port, m.engine, on_cpu))


# --- the config field ------------------------------------------------------------------------------------


def test_a_spec_without_disagg_keeps_the_hash_it_had_before_the_field():
    """server_hash / point_id are resume keys: literals computed before `disagg` existed (2026-12-05)."""
    points = load_sweep(ROOT / "configs/sweeps/smoke.yaml").points()
    assert (points[0].server_hash, points[0].point_id) == ("555521dcfef1", "1fc1e0672fca")
    assert "disagg" not in ServerSpec(model="glm-4.5-tiny").model_dump()


def test_a_disagg_spec_has_its_own_hash_and_a_row_label():
    plain = ServerSpec(model="glm-4.5-tiny", max_model_len=2048, max_num_seqs=16)
    pd_ = _spec({"connector": "ExampleConnector"})
    base = _spec({"connector": "none"})
    assert len({plain.server_hash, pd_.server_hash, base.server_hash}) == 3
    assert pd_.disagg.label(1) == "1P1D ExampleConnector"
    two = _spec({"connector": "NixlConnector", "prefill": {"replicas": 2, "tensor_parallel_size": 2},
                 "decode": {"tensor_parallel_size": 4}})
    assert two.disagg.label(1) == "2P1D TP2/TP4 NixlConnector"
    assert two.disagg.gpu_count(1) == 2 * 2 + 1 * 4
    assert base.disagg.label(1) == "2 servers aggregated"
    assert _spec({"connector": "none", "decode": {"replicas": 2}}, tp=2).disagg.label(2) == "3 servers aggregated TP2"
    assert _spec({"connector": "none", "decode": {"tensor_parallel_size": 4}}).disagg.label(1) == (
        "1xTP1 + 1xTP4 aggregated")


@pytest.mark.parametrize("bad,fragment", [
    ({"connector": "OffloadingConnector"}, "connector must be one of ExampleConnector"),
    ({"connector": "NixlConnector", "kv_roles": "producer"}, "kv_roles must be one of producer_consumer, both"),
    ({"connector": "NixlConnector", "kv_buffer_device": "tpu"}, "kv_buffer_device must be one of cpu, cuda, xpu"),
    ({"connector": "none", "extra_config": {"a": 1}}, "connector none moves no KV"),
    ({"connector": "NixlConnector", "prefill": {"replicas": 0}}, "greater than 0"),
    ({"connector": "NixlConnector", "kv_buffer_size": 1e9}, "kv_buffer_size"),
])
def test_bad_disagg_values_are_refused_naming_the_field(bad, fragment):
    with pytest.raises(ValidationError) as e:
        DisaggSpec(**bad)
    assert fragment in str(e.value)


def test_bad_disagg_in_a_sweep_file_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "x", "hardware": {"gpu": "cpu-2core", "count": 2}, "load": {"concurrency": [1]},
        "server": {"model": "glm-4.5-tiny", "disagg": {"connector": "P2pNcclConnector"}}}))
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "server.disagg.connector" in lines[0] and "P2pNcclConnector" in lines[0], lines


# --- what is rendered --------------------------------------------------------------------------------------


def test_1p1d_shared_storage_on_cpu_renders_two_servers_and_the_proxy():
    spec = _spec({"connector": "ExampleConnector"})
    members = plan_members(spec, EngineSpec(), on_cpu=True, ports=iter([8100, 8101]), kv_dir=Path("/run/kv"))
    assert [(m.name, m.port, m.env) for m in members] == [("prefill0", 8100, {}), ("decode0", 8101, {})]
    prefill = ('{"kv_connector": "ExampleConnector", "kv_role": "kv_producer", "kv_buffer_device": "cpu", '
               '"kv_connector_extra_config": {"shared_storage_path": "/run/kv"}}')
    decode = prefill.replace("kv_producer", "kv_consumer")
    tail = " --gpu-memory-utilization 0.3 --kv-transfer-config "
    assert _args(members[0], True) == "--model /models/glm " + COMMON.format(port=8100, tp=1) + tail + prefill
    assert _args(members[1], True) == "--model /models/glm " + COMMON.format(port=8101, tp=1) + tail + decode
    assert " ".join(proxy_command("py", 9000, members, aggregated=False)) == (
        "py -m bench.engines.disagg_proxy --port 9000 --prefill http://127.0.0.1:8100 "
        "--decode http://127.0.0.1:8101")


def test_2p1d_nixl_on_gpus_renders_devices_side_channels_and_roles():
    spec = _spec({"connector": "NixlConnector", "prefill": {"replicas": 2, "tensor_parallel_size": 2},
                  "decode": {"replicas": 1, "tensor_parallel_size": 4}})
    engine = EngineSpec(extra_args=("--block-size", "64"))
    ports = iter([8100, 5600, 8101, 5601, 8102, 5602])
    members = plan_members(spec, engine, on_cpu=False, ports=ports, kv_dir=None)
    assert [(m.name, m.port, m.env) for m in members] == [
        ("prefill0", 8100, {"CUDA_VISIBLE_DEVICES": "0,1", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5600"}),
        ("prefill1", 8101, {"CUDA_VISIBLE_DEVICES": "2,3", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5601"}),
        ("decode0", 8102, {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5602"}),
    ]
    producer = '{"kv_connector": "NixlConnector", "kv_role": "kv_producer", "kv_buffer_device": "cuda"}'
    consumer = '{"kv_connector": "NixlConnector", "kv_role": "kv_consumer", "kv_buffer_device": "cuda"}'
    user = " --block-size 64 --kv-transfer-config "
    assert _args(members[0], False) == "--model /models/glm " + COMMON.format(port=8100, tp=2) + user + producer
    assert _args(members[1], False) == "--model /models/glm " + COMMON.format(port=8101, tp=2) + user + producer
    assert _args(members[2], False) == "--model /models/glm " + COMMON.format(port=8102, tp=4) + user + consumer
    assert members[0].engine.env == members[0].env  # the sweep's engine.env is empty here; the member adds its own
    assert " ".join(proxy_command("py", 9000, members, aggregated=False)) == (
        "py -m bench.engines.disagg_proxy --port 9000 --prefill http://127.0.0.1:8100 "
        "--prefill http://127.0.0.1:8101 --decode http://127.0.0.1:8102")


def test_gpus_come_from_cuda_visible_devices_and_must_suffice():
    spec = _spec({"connector": "NixlConnector", "kv_roles": "both", "prefill": {"replicas": 1},
                  "decode": {"replicas": 1}}, tp=2)
    members = plan_members(spec, EngineSpec(), False, iter(range(8100, 8200)), None, ["4", "5", "6", "7"])
    assert [m.env["CUDA_VISIBLE_DEVICES"] for m in members] == ["4,5", "6,7"]
    assert [m.kv_config["kv_role"] for m in members] == ["kv_both", "kv_both"]
    from bench.engines.base import EngineStartError

    with pytest.raises(EngineStartError, match="needs 4 GPUs; CUDA_VISIBLE_DEVICES names 3"):
        plan_members(spec, EngineSpec(), False, iter(range(8100, 8200)), None, ["0", "1", "2"])


def test_the_aggregated_baseline_has_no_connector_and_one_pool_at_the_proxy():
    spec = _spec({"connector": "none"})
    members = plan_members(spec, EngineSpec(), on_cpu=True, ports=iter([8100, 8101]), kv_dir=None)
    assert all(m.kv_config is None and "--kv-transfer-config" not in _args(m, True) for m in members)
    assert " ".join(proxy_command("py", 9000, members, aggregated=True)) == (
        "py -m bench.engines.disagg_proxy --port 9000 --aggregated --decode http://127.0.0.1:8100 "
        "--decode http://127.0.0.1:8101")


def test_extra_config_and_the_old_connector_name():
    d = DisaggSpec(connector="SharedStorageConnector", kv_buffer_device="cpu",
                   extra_config={"shared_storage_path": "/mine"})
    assert kv_transfer_config(d, "decode", on_cpu=False, kv_dir=Path("/run/kv")) == {
        "kv_connector": "ExampleConnector", "kv_role": "kv_consumer", "kv_buffer_device": "cpu",
        "kv_connector_extra_config": {"shared_storage_path": "/mine"}}
    # what vLLM parses: the flag's value is one JSON object
    assert json.loads(json.dumps(kv_transfer_config(d, "prefill", True, None)))["kv_role"] == "kv_producer"


# --- refused before anything starts ---------------------------------------------------------------------------


def _sweep(kind: str = "vllm", count: int | None = 2, **disagg) -> Sweep:
    engine = {"kind": kind, "base_url": "http://127.0.0.1:1"} if kind == "openai" else {"kind": kind}
    return Sweep(name="d", engine=engine, hardware={"gpu": "h100", "count": count}, load={"concurrency": [1]},
                 server={"model": "glm-4.5-tiny", "disagg": {"connector": "NixlConnector", **disagg}})


def test_pools_must_add_up_to_hardware_count():
    sweep = _sweep(count=None, prefill={"replicas": 2})
    with pytest.raises(UserInputError, match=r"^hardware.count: server.disagg \(2 prefill x TP1 \+ 1 decode x TP1\) "
                                             r"uses 3 GPUs; set hardware.count: 3"):
        check_disagg(sweep.server_specs(), sweep)
    sweep = _sweep(count=4, prefill={"replicas": 2})
    with pytest.raises(UserInputError, match="hardware.count is 4 but server.disagg .* uses 3 GPUs"):
        check_disagg(sweep.server_specs(), sweep)
    sweep = _sweep(count=3, prefill={"replicas": 2})
    check_disagg(sweep.server_specs(), sweep)  # adds up: no error


@pytest.mark.parametrize("kind", ["openai", "vllm-offline", "virtual"])
def test_engines_that_cannot_disaggregate_refuse_it_in_preflight(kind):
    sweep = _sweep(kind)
    with pytest.raises(UserInputError, match=f"^server.disagg: engine.kind {kind} cannot run a disaggregated"):
        engine_class(kind).preflight(sweep.server_specs(), sweep)


def test_disagg_on_the_openai_engine_is_one_line_exit_2_before_anything_starts(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "x", "engine": {"kind": "openai", "base_url": "http://127.0.0.1:1"},
        "hardware": {"gpu": "cpu-2core", "count": 2}, "load": {"concurrency": [1]},
        "server": {"model": "glm-4.5-tiny", "disagg": {"connector": "ExampleConnector"}}}))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["error: server.disagg: engine.kind openai cannot run a disaggregated (prefill/decode) "
                     "deployment; use engine.kind vllm, or drop server.disagg"]
    assert not out.exists() or list(out.rglob("*")) == []
