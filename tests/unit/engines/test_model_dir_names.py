"""Issue 25 item 8: a `--config-dir` model whose twin name holds `../` or is absolute wrote its dummy-weights
directory outside the cache; now one line, exit 2, before anything starts, and nothing written anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import base
from bench.config.catalog import get_model
from bench.engines.modeldir import check_model_dir_name, materialize
from bench.errors import UserInputError
from tests.unit.cli.bad_sweeps import sweep_with

SHIPPED = Path(base.CONFIG_DIR) / "models" / "glm-4.5.yaml"


@pytest.mark.parametrize("name,why", [
    ("../escape-tiny", "contains '/'"),
    ("/tmp/abs-tiny", "contains '/'"),
    ("..\\win-tiny", "contains '\\\\'"),
    ("..", "starts with '.'"),
    (".hidden", "starts with '.'"),
    (" ", "is blank"),
])
def test_bad_twin_names_are_refused(name, why):
    with pytest.raises(UserInputError) as e:
        check_model_dir_name(name)
    assert f"model {name!r}: its name {why}" in str(e.value)


def test_plain_names_pass():
    for name in ("glm-4.5-tiny", "my.model_v2-tiny", "a..b"):
        check_model_dir_name(name)


def test_materialize_refuses_before_writing(tmp_path):
    spec = get_model("glm-4.5-tiny").model_copy(update={"name": "../../escape"})
    cache = tmp_path / "cache" / "models"
    with pytest.raises(UserInputError, match="contains '/'"):
        materialize(spec, None, cache)
    assert not (tmp_path / "escape").exists() and not cache.exists()


@pytest.mark.parametrize("twin", ["../escape-tiny", "ABS"])
def test_config_dir_twin_with_a_path_is_one_line_and_writes_nothing(tmp_path, monkeypatch, twin):
    twin = str(tmp_path / "abs-tiny") if twin == "ABS" else twin
    user = tmp_path / "mine"
    (user / "models").mkdir(parents=True)
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["name"], doc["tiny"]["name"], doc["tiny_variants"] = "evil", twin, []
    (user / "models" / "evil.yaml").write_text(yaml.safe_dump(doc))
    cache = tmp_path / "cache"
    monkeypatch.setenv("MAAS_BENCH_CACHE", str(cache))
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(sweep_with(server__model=twin)))
    out = tmp_path / "out"
    out.mkdir()
    try:
        r = CliRunner().invoke(app, ["--config-dir", str(user), "run", str(cfg), "--out", str(out)])
    finally:
        base.set_user_config_dir(None)
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: model {twin!r}: its name contains '/'; a catalog model's name names its "
                     "dummy-weights directory and must be one plain path component (no '/', '\\', NUL, leading '.')"]
    assert list(out.rglob("*")) == [] and not cache.exists()
    assert not (tmp_path / "escape-tiny").exists() and not Path(twin).exists()
