"""server.speculative: expansion into server specs, vLLM's --speculative-config JSON, and bad input.

The expected JSON is written by hand from vLLM 0.32's SpeculativeConfig field names
(vllm/config/speculative.py: method, num_speculative_tokens, model, prompt_lookup_min/max,
rejection_sample_method, synthetic_acceptance_length, synthetic_acceptance_rates).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.speculative import SpeculativeSpec, vllm_speculative_config
from bench.config.sweep import EngineSpec, ServerSpec, Sweep, load_sweep
from bench.engines.vllm_server import render_args

MTP_K3 = {"method": "mtp", "num_speculative_tokens": 3, "acceptance_length": 2.5}


def _flag(spec: ServerSpec) -> dict | None:
    args = render_args(spec, "/m", 8000, EngineSpec(), on_cpu=True)
    if "--speculative-config" not in args:
        return None
    return json.loads(args[args.index("--speculative-config") + 1])


def test_rendered_json_is_what_vllm_reads():
    assert _flag(ServerSpec(model="glm-4.5-tiny-mtp", speculative=MTP_K3)) == {
        "method": "mtp", "num_speculative_tokens": 3, "rejection_sample_method": "synthetic",
        "synthetic_acceptance_length": 2.5}
    rates = {"method": "mtp", "num_speculative_tokens": 2, "acceptance_rates": [0.8, 0.5]}
    assert _flag(ServerSpec(model="m", speculative=rates)) == {
        "method": "mtp", "num_speculative_tokens": 2, "rejection_sample_method": "synthetic",
        "synthetic_acceptance_rates": [0.8, 0.5]}
    ngram = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    assert _flag(ServerSpec(model="m", speculative=ngram)) == {  # standard sampling: no synthetic keys
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    eagle = {"method": "eagle3", "num_speculative_tokens": 1, "draft_model": "org/eagle3-head"}
    assert vllm_speculative_config(SpeculativeSpec(**eagle)) == {
        "method": "eagle3", "num_speculative_tokens": 1, "model": "org/eagle3-head"}
    assert _flag(ServerSpec(model="m")) is None


def test_k0_and_absent_are_one_server_and_keep_the_old_hash():
    plain = ServerSpec(model="glm-4.5-tiny")
    k0 = ServerSpec(model="glm-4.5-tiny", speculative={"method": "mtp", "num_speculative_tokens": 0})
    assert k0.speculative is None and k0.server_hash == plain.server_hash
    assert "speculative" not in plain.model_dump()  # resume keys of runs made before the field existed hold
    assert ServerSpec(model="glm-4.5-tiny", speculative=MTP_K3).server_hash != plain.server_hash


def test_a_list_is_an_axis_and_lists_inside_a_spec_cross():
    sweep = Sweep(name="s", load={"concurrency": [1]}, server={"model": "m", "speculative": [
        None, {"method": "mtp", "num_speculative_tokens": [1, 3], "acceptance_length": [1.5, 2.0]}]})
    got = [(s.speculative.num_speculative_tokens, s.speculative.acceptance_length) if s.speculative else None
           for s in sweep.server_specs()]
    assert got == [None, (1, 1.5), (1, 2.0), (3, 1.5), (3, 2.0)]


def _write(tmp_path: Path, speculative, model: str = "glm-4.5-tiny-mtp", engine=None) -> Path:
    doc = {"name": "s", "server": {"model": model, "speculative": speculative},
           "load": {"concurrency": [1]}, "workloads": [{"input_len": 8, "output_len": 8}]}
    if engine:
        doc["engine"] = engine
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


BAD = [
    ({"method": "mtp", "num_speculative_tokens": -1}, "num_speculative_tokens"),
    ({"method": "mtp", "num_speculative_tokens": 1, "acceptance_length": 2.5}, "[1, 2]"),
    ({"method": "mtp", "num_speculative_tokens": 3, "acceptance_length": 0.9}, "acceptance_length"),
    ({"method": "mtp", "num_speculative_tokens": 3, "acceptance_length": float("nan")}, "finite"),
    ({"method": "mtp", "num_speculative_tokens": 3, "acceptance_length": float("inf")}, "finite"),
    ({"method": "mtp", "num_speculative_tokens": 2, "acceptance_rates": [0.5, 0.8]}, "non-increasing"),
    ({"method": "mtp", "num_speculative_tokens": 3, "acceptance_rates": [0.8, 0.5]}, "K = 3"),
    ({"method": "mtp", "num_speculative_tokens": 2, "acceptance_rates": [1.2, 0.5]}, "[0, 1]"),
    ({"method": "mtp", "num_speculative_tokens": 1, "acceptance_length": 1.5, "acceptance_rates": [0.5]}, "not both"),
    ({"method": "medusa", "num_speculative_tokens": 1}, "mtp, eagle3, ngram, draft_model"),
    ({"method": "eagle3", "num_speculative_tokens": 1}, "draft_model is required"),
    ({"method": "draft_model", "num_speculative_tokens": 1, "draft_model": "/no/such/draft"}, "does not exist"),
    ({"method": "draft_model", "num_speculative_tokens": 1, "draft_model": "no-such-model"}, "unknown model"),
    ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 5, "prompt_lookup_max": 2}, "<="),
]


@pytest.mark.parametrize(("spec", "fragment"), BAD, ids=[f[1] for f in BAD])
def test_bad_speculative_input_is_one_line_exit_2_and_writes_nothing(tmp_path, spec, fragment):
    out = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", str(_write(tmp_path, spec)), "--out", str(out)])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "speculative" in lines[0] and fragment in lines[0], lines
    assert not out.exists()


def test_mtp_needs_a_model_with_an_mtp_path(tmp_path):
    spec = {"method": "mtp", "num_speculative_tokens": 1}
    with pytest.raises(Exception, match="num_speculative_tokens 1|num_nextn_predict_layers 0"):
        load_sweep(_write(tmp_path, spec, model="glm-4.5-tiny"))
    with pytest.raises(Exception, match="no MiniMax-M2 MTP module"):
        load_sweep(_write(tmp_path, spec, model="minimax-m2-tiny"))
    with pytest.raises(Exception, match="already runs"):
        load_sweep(_write(tmp_path, spec, engine={"kind": "openai", "base_url": "http://127.0.0.1:9"}))


def test_shipped_spec_sweeps_load():
    cpu = load_sweep("configs/sweeps/spec-cpu.yaml")
    ks = [(p.server.speculative.num_speculative_tokens, p.server.speculative.acceptance_length)
          if p.server.speculative else 0 for p in cpu.points()]
    assert ks == [0, (1, 1.8), (3, 2.5)]
    std = [p.server.speculative for p in load_sweep("configs/sweeps/spec-cpu-standard.yaml").points()]
    assert [(s.method, s.num_speculative_tokens, s.synthetic) for s in std] == [
        ("mtp", 1, False), ("mtp", 3, False), ("ngram", 3, False)]
    gpu = load_sweep("configs/sweeps/glm5-mtp-8xh200.yaml")
    sp = [p.server.speculative for p in gpu.points()]
    assert sp[0] is None and (sp[1].num_speculative_tokens, sp[1].acceptance_length) == (3, 1.64)
    assert {p.server.model for p in gpu.points()} == {"glm-5.1"} and gpu.hardware.gpu == "h200"


def test_pinned_acceptance_needs_a_vllm_with_synthetic_sampling(tmp_path, monkeypatch):
    from bench.engines import vllm_server

    if vllm_server.installed_vllm_has("__init__.py", "") is not None:  # vLLM installed here: 0.32 has it
        assert vllm_server.installed_vllm_has("config/speculative.py", "rejection_sample_method") is True
    monkeypatch.setattr(vllm_server, "installed_vllm_has", lambda *a: False)  # an older vLLM
    out = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", str(_write(tmp_path, MTP_K3)), "--out", str(out)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "rejection_sample_method" in lines[0], (r.output, lines)
    assert not out.exists()
    # standard sampling (no pinned acceptance) does not need it: nothing to refuse before the start
    vllm_server.check_speculative_support([ServerSpec(model="m", speculative={"method": "ngram",
                                                                               "num_speculative_tokens": 2})])
