"""A sweep that uses a version-gated vLLM feature is refused before anything starts, on a faked
older vLLM, with one line naming the field, the feature and the version it needs.

The minimum versions come from bench/engines/vllm_version.py FEATURES (vLLM release notes); the
expected numbers below are written out by hand, so a changed table must change this test too.
"""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.sweep import ServerSpec
from bench.engines import vllm_version
from bench.engines.vllm_server import check_speculative_support
from bench.engines.vllm_version import needed_features, require_features
from bench.errors import UserInputError

PINNED = {"method": "mtp", "num_speculative_tokens": 3, "acceptance_length": 2.5}
NGRAM = {"method": "ngram", "num_speculative_tokens": 2}


def test_needed_features_per_spec():
    assert needed_features(ServerSpec(model="m")) == []
    assert needed_features(ServerSpec(model="m", kv_cache_dtype="fp8_e4m3")) == [
        ("server.kv_cache_dtype", "kv_cache_dtype_fp8")]
    assert needed_features(ServerSpec(model="m", speculative=NGRAM)) == [("server.speculative", "speculative_config")]
    assert [f for _, f in needed_features(ServerSpec(model="m", speculative=PINNED, kv_cache_dtype="fp8"))] == [
        "speculative_config", "speculative_synthetic", "kv_cache_dtype_fp8"]


def test_fp8_kv_cache_on_a_vllm_before_0_5():
    specs = [ServerSpec(model="m"), ServerSpec(model="m", kv_cache_dtype="fp8")]
    with pytest.raises(UserInputError) as e:
        require_features(specs, version="0.4.3")
    msg = str(e.value)
    assert msg.startswith("server.kv_cache_dtype: ") and "kv_cache_dtype_fp8" in msg
    assert "needs vLLM >= 0.5; installed vLLM is 0.4.3" in msg and "\n" not in msg
    require_features(specs, version="0.5.0")  # the first version that has it: no error


def test_speculation_needs_its_versions():
    with pytest.raises(UserInputError, match=r"^server\.speculative: .*needs vLLM >= 0\.8; installed vLLM is 0\.7\.3"):
        require_features([ServerSpec(model="m", speculative=NGRAM)], version="0.7.3")
    require_features([ServerSpec(model="m", speculative=NGRAM)], version="0.31.0")  # standard sampling: fine
    want = (r"^server\.speculative\.acceptance_length/acceptance_rates: .*speculative_synthetic.*"
            r"needs vLLM >= 0\.32; installed vLLM is 0\.31\.0")
    with pytest.raises(UserInputError, match=want):
        check_speculative_support([ServerSpec(model="m", speculative=PINNED)], version="0.31.0")


def test_run_refuses_a_fp8_kv_sweep_on_an_old_vllm_before_any_start(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_version, "installed_version", lambda: "0.4.0")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "kv", "engine": {"kind": "vllm"}, "hardware": {"gpu": "cpu-2core"},
        "server": {"model": "glm-4.5-tiny", "kv_cache_dtype": "fp8"},
        "load": {"concurrency": [1], "num_requests": 2}, "workloads": [{"name": "w", "input_len": 8,
                                                                       "output_len": 8}]}))
    out = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.output, lines)
    assert "server.kv_cache_dtype" in lines[0] and "needs vLLM >= 0.5; installed vLLM is 0.4.0" in lines[0]
    assert not out.exists()
