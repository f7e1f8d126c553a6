"""Configs ship with the package, and a user's config directory overrides entries by id.

Layering rules (bench.config.base.load_config): the user's hardware.yaml replaces whole GPUs by id,
prices.yaml whole entries by key, models/*.yaml whole models by name; everything else stays shipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from bench.config import base
from bench.config.catalog import load_models
from bench.config.hardware import load_hardware
from bench.config.prices import load_price_book
from bench.econ.cost import resolve_usd_per_gpu_hour
from bench.errors import UserInputError
from bench.planner.roofline import load_roofline_config

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(base.CONFIG_DIR_ENV, raising=False)
    base.set_user_config_dir(tmp_path)
    yield tmp_path
    base.set_user_config_dir(None)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_hardware_override_replaces_one_gpu_by_id(user_dir):
    _write(user_dir / "hardware.yaml", """
        gpus:
          h100:
            name: H100 (our contract)
            memory_gb: 80
            hbm_gb_s: 3350
            tiers:
              contract: {usd_per_gpu_hour: 1.23, source: our contract, as_of: 2026-01}
    """)
    hw = load_hardware()
    assert list(hw.gpu("h100").tiers) == ["contract"]
    assert resolve_usd_per_gpu_hour("h100", "contract", hw) == 1.23
    assert "h200" in hw.gpus  # untouched GPUs stay
    assert hw.exchange_rates.usd_per_cny == 0.14  # configs/hardware.yaml's rate, not overridden


def test_price_override_by_key_and_new_keys(user_dir):
    _write(user_dir / "prices.yaml", """
        prices:
          glm-4.6@zai: {currency: USD, as_of: 2026-02, source: renegotiated, input_per_m: 0.5, output_per_m: 1.5}
          glm-4.6@ours: {currency: USD, as_of: 2026-02, source: our list, input_per_m: 0.4, output_per_m: 1.2}
    """)
    book = load_price_book()
    assert book.get("glm-4.6@zai").input_per_m == 0.5
    assert book.get("glm-4.6@ours").output_per_m == 1.2
    assert "minimax-m2" in book.models()  # shipped entries stay


def test_model_override_by_name(user_dir):
    text = (base.CONFIG_DIR / "models" / "glm-4.6.yaml").read_text().replace("name: glm-4.6", "name: glm-4.6-mine")
    _write(user_dir / "models" / "mine.yaml", text)
    models = load_models()
    assert "glm-4.6-mine" in models and "glm-4.6" in models
    assert models["glm-4.6-mine"].hp == models["glm-4.6"].hp


def test_roofline_override_layers_by_key(user_dir):
    _write(user_dir / "roofline.yaml", """
        defaults: {step_overhead_ms: 2.5}
        per_gpu: {h100: {bandwidth_efficiency: 0.7}}
    """)
    cfg = load_roofline_config()
    assert cfg.defaults.step_overhead_ms == 2.5
    import yaml

    shipped = yaml.safe_load((base.CONFIG_DIR / "roofline.yaml").read_text())["defaults"]["bandwidth_efficiency"]
    assert cfg.defaults.bandwidth_efficiency == shipped  # the shipped value, kept by field
    assert cfg.per_gpu["h100"] == {"bandwidth_efficiency": 0.7}
    assert "ascend-910b" in cfg.per_gpu


def test_a_bad_user_entry_names_the_user_file(user_dir):
    _write(user_dir / "hardware.yaml", "gpus:\n  h100: {name: x, memory_gb: -1, hbm_gb_s: 1}\n")
    with pytest.raises(UserInputError, match=str(user_dir / "hardware.yaml") + ".*gpus.h100.memory_gb"):
        load_hardware()


def test_env_var_and_missing_dir(tmp_path, monkeypatch):
    base.set_user_config_dir(None)
    _write(tmp_path / "prices.yaml", "prices:\n  x@y: {currency: USD, as_of: 2026-03, source: s, input_per_m: 1, "
                                     "output_per_m: 2}\n")
    monkeypatch.setenv(base.CONFIG_DIR_ENV, str(tmp_path))
    assert load_price_book().get("x@y").output_per_m == 2
    with pytest.raises(UserInputError, match="not a directory"):
        base.set_user_config_dir(tmp_path / "nope")


def test_without_a_user_dir_the_shipped_files_load(monkeypatch):
    monkeypatch.delenv(base.CONFIG_DIR_ENV, raising=False)
    base.set_user_config_dir(None)
    assert base.user_config_dir() is None
    assert "h100" in load_hardware().gpus


@pytest.mark.slow
def test_the_wheel_carries_the_configs(tmp_path):
    """A non-editable install must find models, hardware, prices and roofline factors anywhere.

    Built from a copy of the sources, so the repo's tree gets no build/ or egg-info litter.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    for d in ("bench", "configs"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "_configs"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "whl"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("hardware.yaml", "prices.yaml", "roofline.yaml", "models/glm-4.6.yaml", "sweeps/smoke.yaml"):
        assert f"bench/_configs/{want}" in names
    assert "bench/report/templates/report.html.j2" in names
