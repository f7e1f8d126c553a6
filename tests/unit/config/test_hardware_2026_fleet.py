"""The 2026 fleet in configs/hardware.yaml (issue 22): B300, GB200 / GB300 NVL72, MI325X, MI355X, Ascend 910C.

Every golden number below is typed from the public source named beside it (vendor spec pages and the
tabulations that quote them, read 2026-12-05), worked by hand where the source gives a rack total or a
sparse figure; none is read from the YAML under test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.config import base
from bench.config.hardware import FIGURE_FIELDS, HardwareCatalog, PendingGpuSpec, load_hardware
from bench.errors import UserInputError

NEW_GPU_IDS = ("b300", "gb200-nvl72", "gb300-nvl72", "mi325x", "mi355x", "ascend-910c")

# (figure -> published value). Rack figures of the NVL72 systems are divided by 72; "sparse" peaks by 2.
GOLDEN = {
    "b300": {  # NVIDIA Blackwell Ultra datasheet (per-GPU table, quoted by verda.com), HGX B300 pages
        "memory_gb": 270, "hbm_gb_s": 7700, "tflops_bf16": 2250, "tflops_fp8": 4500, "tflops_fp4": 14000,
        "tflops_int8": 150, "tdp_w": 1100, "interconnect_gb_s": 1800 / 2, "scale_up_gpus": 8,
        "scale_out_gb_s": 800 / 8},                       # ConnectX-8, 800 Gb/s per GPU
    "gb200-nvl72": {  # NVIDIA GB200 NVL72: 13.4 TB HBM3e, 576 TB/s, BF16 360 / FP8 720 / FP4 1,440 PF sparse
        "memory_gb": 13400 / 72, "hbm_gb_s": 576000 / 72, "tflops_bf16": 360000 / 72 / 2,
        "tflops_fp8": 720000 / 72 / 2, "tflops_fp4": 1440000 / 72 / 2, "tdp_w": 1200,
        "interconnect_gb_s": 1800 / 2, "scale_up_gpus": 72, "scale_out_gb_s": 400 / 8},  # ConnectX-7 400G
    "gb300-nvl72": {  # Blackwell Ultra datasheet (GB300 279 GB, 8 TB/s), rack FP4 1,080 PF dense, 360 FP8, 180 BF16
        "memory_gb": 279, "hbm_gb_s": 576000 / 72, "tflops_bf16": 180000 / 72, "tflops_fp8": 360000 / 72,
        "tflops_fp4": 1080000 / 72, "tdp_w": 1400, "interconnect_gb_s": 1800 / 2, "scale_up_gpus": 72,
        "scale_out_gb_s": 800 / 8},
    "mi325x": {  # AMD: 256 GB HBM3E, 6 TB/s, 1,307.4 BF16 / 2,614.9 FP8 TFLOPS, 1,000 W; 7 IF links x 128 GB/s
        "memory_gb": 256, "hbm_gb_s": 6000, "tflops_bf16": 1307.4, "tflops_fp8": 2614.9, "tdp_w": 1000,
        "interconnect_gb_s": 7 * 128 / 2, "scale_up_gpus": 8},
    "mi355x": {  # AMD: 288 GB, 8 TB/s, 1,400 W; ISSCC 2026: 8,192 FP8 FLOP/clock/CU, 256 CUs, 2.4 GHz
        "memory_gb": 288, "hbm_gb_s": 8000, "tflops_fp8": 8192 * 256 * 2.4e9 / 1e12,
        "tflops_bf16": 8192 * 256 * 2.4e9 / 1e12 / 2, "tdp_w": 1400,
        "interconnect_gb_s": 7 * 153.6 / 2, "scale_up_gpus": 8},
    "ascend-910c": {  # DigiTimes / TechPowerUp: 780 TFLOPS BF16, 3,200 GB/s; SemiAnalysis: ~128 GB
        "memory_gb": 128, "hbm_gb_s": 3200, "tflops_bf16": 780},
}

# InferenceX HW_REGISTRY, July-2026 version (costh, costn, costr): the same version as the older GPUs' tiers.
GOLDEN_TIERS = {"b300": (2.26, 2.52, 3.0), "gb200-nvl72": (1.86, 2.26, 2.6), "gb300-nvl72": (2.31, 2.79, 3.3),
                "mi325x": (1.10, 1.32, 1.6), "mi355x": (1.50, 2.09, 2.1)}
# The newest stored version (commit e41635bf, 2026-09-20) raised costr; each tier's note must say so.
NEWEST_COSTR = {"b300": "4.25", "gb200-nvl72": "4.0", "gb300-nvl72": "5.0", "mi325x": "1.6", "mi355x": "2.9"}
VENDOR = {"b300": "b200", "gb200-nvl72": "b200", "gb300-nvl72": "b200", "mi325x": "mi300x", "mi355x": "mi300x",
          "ascend-910c": "ascend-910b"}


@pytest.fixture(scope="module")
def hw() -> HardwareCatalog:
    return load_hardware()


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_every_new_gpu_is_usable_and_sources_each_figure(hw, gid):
    assert gid in hw.gpus and gid not in hw.pending_gpus
    g = hw.gpu(gid)
    given = {f for f, v in g.figures().items() if v is not None}
    assert {"memory_gb", "hbm_gb_s", "tflops_bf16"} <= given
    assert given <= set(g.figure_sources), (gid, sorted(given - set(g.figure_sources)))
    assert g.figures_as_of == "2026-12-05"
    for f in given - {"scale_up_latency_us", "scale_out_latency_us"}:
        src = g.figure_sources[f]
        # cross-checked in a second place, or the disagreement / single source said so
        assert any(w in src for w in ("checked", "disagree", "one source only")), (gid, f, src)


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_figures_match_the_published_numbers(hw, gid):
    g = hw.gpu(gid)
    for figure, published in GOLDEN[gid].items():
        tol = 0.02 if gid == "ascend-910c" or figure == "memory_gb" else 0.001
        assert getattr(g, figure) == pytest.approx(published, rel=tol), (gid, figure)


def test_mi355x_fp4_and_fp6_run_at_twice_fp8():
    # CDNA 4: MXFP6 at the MXFP4 rate, "20.1 PFLOPS" with sparsity (Tom's Hardware), 10 PF dense (The Register)
    g = load_hardware().gpu("mi355x")
    assert g.tflops_fp6 == g.tflops_fp4 == pytest.approx(20100 / 2, rel=0.005)
    assert g.tflops_fp4 == pytest.approx(2 * 8192 * 256 * 2.4e9 / 1e12, rel=0.001)


def test_blackwell_ultra_int8_is_cut():
    # the datasheet's B300 / GB300 INT8 (0.15 / 0.165 POPS dense) is ~1/30 of B200's 4,500: a quant that
    # computes in int8 must not get B200's rate on them
    hw = load_hardware()
    assert hw.gpu("b300").tflops_int8 == 150 and hw.gpu("gb300-nvl72").tflops_int8 == 165


@pytest.mark.parametrize("gid", sorted(GOLDEN_TIERS))
def test_cost_tiers_are_the_inferencex_constants(hw, gid):
    g = hw.gpu(gid)
    costh, costn, costr = GOLDEN_TIERS[gid]
    assert [g.tiers[t].usd_per_gpu_hour for t in ("owning-hyperscaler", "owning-neocloud", "rental-3yr")] == \
        [costh, costn, costr]
    for tier in g.tiers.values():
        assert tier.as_of == "2026-12-05" and tier.source_date == "2026-07" and "InferenceX" in tier.source
        assert "e41635bf" in tier.note
    assert NEWEST_COSTR[gid] in g.tiers["rental-3yr"].note


def test_ascend_910c_has_no_cost_tier_and_says_how_to_price_it(hw):
    assert hw.gpu("ascend-910c").cost_tiers() == []
    with pytest.raises(UserInputError) as e:
        hw.default_tier("ascend-910c")
    msg = str(e.value)
    assert "\n" not in msg and "ascend-910c" in msg and "--usd-per-gpu-hour" in msg


@pytest.mark.parametrize("gid", NEW_GPU_IDS)
def test_efficiencies_come_from_a_gpu_of_the_same_vendor(hw, gid):
    assert hw.gpu(gid).efficiency_from == VENDOR[gid]


def test_scale_up_fields():
    hw = load_hardware()
    g = hw.gpu("gb200-nvl72")
    assert g.scale_up_gb_s == g.interconnect_gb_s == 900  # one field, two names
    assert (g.scale_up_latency_us, g.scale_out_latency_us) == (10, 10 + 5)  # aiconfigurator p2p; + IB 5 us
    assert {"scale_up_latency_us", "scale_out_latency_us"} <= set(FIGURE_FIELDS)
    assert hw.gpu("mi355x").scale_out_latency_us is None  # no AMD figure found: readers use roofline.yaml


def test_figure_sources_only_name_known_figures():
    with pytest.raises(ValueError, match="unknown figure"):
        PendingGpuSpec(name="x", notes="n", figure_sources={"hbm_gbs": "typo"})


def test_a_pending_gpu_must_say_why():
    with pytest.raises(ValueError, match="notes"):
        PendingGpuSpec(name="x")


@pytest.mark.parametrize("gid", ["h100", "h200", "b200"])
def test_older_nvidia_gpus_get_the_same_link_fields(gid):
    # 8-GPU HGX board, one ConnectX-7 400 Gb/s NIC per GPU, aiconfigurator p2p 10 us (+ 5 us InfiniBand)
    g = load_hardware().gpu(gid)
    assert (g.scale_up_gpus, g.scale_out_gb_s, g.scale_up_latency_us, g.scale_out_latency_us) == (8, 400 / 8, 10, 15)


def test_existing_gpus_keep_their_figures():
    # the 2026 fleet is added, nothing older moves (H200 datasheet: 141 GB, 4.8 TB/s)
    g = load_hardware().gpu("h200")
    assert (g.memory_gb, g.hbm_gb_s, g.efficiency_from) == (141, 4800, None)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(base.CONFIG_DIR_ENV, raising=False)
    base.set_user_config_dir(tmp_path)
    yield tmp_path
    base.set_user_config_dir(None)


def test_a_users_pending_gpu_is_refused_with_one_line(user_dir: Path):
    (user_dir / "hardware.yaml").write_text(textwrap.dedent("""
        pending_gpus:
          mi450x:
            name: MI450X (announced)
            notes: no datasheet yet for HBM capacity or bandwidth
    """))
    hw = load_hardware()
    with pytest.raises(UserInputError) as e:
        hw.gpu("mi450x")
    msg = str(e.value)
    assert "\n" not in msg and "mi450x" in msg and "pending_gpus" in msg and "hbm_gb_s" in msg


@pytest.mark.parametrize("parent, match", [("no-such-gpu", "not another GPU"), ("b300", "not another GPU"),
                                           ("gb200-nvl72", "itself inherits")])
def test_efficiency_from_must_name_a_measured_catalog_gpu(user_dir: Path, parent, match):
    (user_dir / "hardware.yaml").write_text(textwrap.dedent(f"""
        gpus:
          b300:
            name: B300 (ours)
            memory_gb: 270
            hbm_gb_s: 7700
            efficiency_from: {parent}
    """))
    with pytest.raises(UserInputError, match=match):
        load_hardware()
