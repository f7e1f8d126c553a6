"""The 2026 fleet in configs/hardware.yaml (issue 22): B300, GB200 / GB300 NVL72, MI325X, MI355X, Ascend 910C.

Figures come only from the project's checked facts (shared/reference/gpus.md). Where that file gives
none, the entry stays under `pending_gpus` with the figure null and a note saying so; the catalog refuses
a pending id with one line instead of handing the planner a GPU without memory.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.config import base
from bench.config.hardware import FIGURE_FIELDS, HardwareCatalog, PendingGpuSpec, load_hardware
from bench.errors import UserInputError

NEW_GPU_IDS = ("b300", "gb200-nvl72", "gb300-nvl72", "mi325x", "mi355x", "ascend-910c")

# Golden numbers copied from shared/reference/gpus.md line 30:
# "A 2026-09 InferenceX post assumed GB200 at $1.86 and GB300 at $2.31 per GPU-hour."
# The file gives no other figure for any of the six (no HBM, bandwidth, TFLOPS, interconnect or price).
GOLDEN_TIERS = {"gb200-nvl72": ("inferencex-assumed", 1.86), "gb300-nvl72": ("inferencex-assumed", 2.31)}
# The NVL72 systems' one NVLink domain (the system's name; the issue's brief).
GOLDEN_SCALE_UP = {"gb200-nvl72": 72, "gb300-nvl72": 72}


@pytest.fixture(scope="module")
def hw() -> HardwareCatalog:
    return load_hardware()


def _entry(hw: HardwareCatalog, gid: str):
    return hw.gpus.get(gid) or hw.pending_gpus[gid]


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_every_new_gpu_validates_and_sources_each_figure(hw, gid):
    assert gid in hw.gpus or gid in hw.pending_gpus
    g = _entry(hw, gid)
    assert g.name
    given = {f for f, v in g.figures().items() if v is not None}
    assert given <= set(g.figure_sources), (gid, sorted(given - set(g.figure_sources)))
    for f in given:
        assert g.figure_sources[f].strip(), (gid, f)
    if given:
        assert g.figures_as_of, gid
    missing = [f for f, v in g.figures().items() if v is None]
    if missing:  # a figure left out is said so, not silently absent
        assert "left null" in g.notes or "no checked source" in g.notes, gid
    for name, tier in g.tiers.items():
        assert tier.source.strip() and tier.as_of and tier.source_date, (gid, name)


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_golden_figure_per_new_gpu(hw, gid):
    g = _entry(hw, gid)
    if gid in GOLDEN_TIERS:
        tier, usd = GOLDEN_TIERS[gid]
        assert g.tiers[tier].usd_per_gpu_hour == usd
        assert g.tiers[tier].source_date == "2026-09"
        assert g.scale_up_gpus == GOLDEN_SCALE_UP[gid]
    else:  # gpus.md gives nothing for it: every figure null, no price made up
        assert all(v is None for v in g.figures().values()), gid
        assert g.tiers == {} and g.tco is None


def test_figure_sources_only_name_known_figures():
    with pytest.raises(ValueError, match="unknown figure"):
        PendingGpuSpec(name="x", notes="n", figure_sources={"hbm_gbs": "typo"})
    assert "scale_up_gpus" in FIGURE_FIELDS and "scale_out_gb_s" in FIGURE_FIELDS


def test_a_pending_gpu_must_say_why():
    with pytest.raises(ValueError, match="notes"):
        PendingGpuSpec(name="x")


def test_new_fields_default_to_none_on_existing_gpus(hw):
    for gid in ("h100", "h200", "b200", "mi300x"):
        g = hw.gpu(gid)
        assert g.scale_up_gpus is None and g.scale_out_gb_s is None and g.tflops_fp6 is None


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_a_pending_gpu_is_refused_with_one_line(hw, gid):
    if gid in hw.gpus:
        pytest.skip(f"{gid} has its figures now")
    with pytest.raises(UserInputError) as e:
        hw.gpu(gid)
    msg = str(e.value)
    assert "\n" not in msg and gid in msg and "pending_gpus" in msg and "hbm_gb_s" in msg
    with pytest.raises(UserInputError):
        hw.canonical_tier(gid, "inferencex-assumed")


def test_unknown_gpu_message_lists_only_usable_gpus(hw):
    with pytest.raises(UserInputError, match="unknown GPU") as e:
        hw.gpu("no-such-gpu")
    assert "mi355x" not in str(e.value)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(base.CONFIG_DIR_ENV, raising=False)
    base.set_user_config_dir(tmp_path)
    yield tmp_path
    base.set_user_config_dir(None)


def test_users_own_figures_make_a_pending_gpu_usable(user_dir: Path):
    # made-up figures: only the layering is under test
    (user_dir / "hardware.yaml").write_text(textwrap.dedent("""
        gpus:
          mi355x:
            name: MI355X (our datasheet)
            memory_gb: 100
            hbm_gb_s: 1000
            tiers:
              contract: {usd_per_gpu_hour: 1.0, source: our contract, as_of: 2026-12}
    """))
    hw = load_hardware()
    assert hw.gpu("mi355x").memory_gb == 100
    assert "mi355x" in hw.pending_gpus  # still listed, but the usable entry wins
    with pytest.raises(UserInputError, match="pending_gpus"):
        hw.gpu("mi325x")
