"""configs/hardware.yaml and configs/prices.yaml: contents match the reference facts; loaders fail loudly."""

from __future__ import annotations

import textwrap

import pytest

from bench.config.hardware import HardwareCatalog, load_hardware
from bench.config.prices import load_price_book
from bench.econ.cost import resolve_usd_per_gpu_hour
from bench.errors import UserInputError

GPU_IDS = {"a100", "h100", "h200", "h20", "b200", "mi300x", "ascend-910b", "cpu-2core"}


@pytest.fixture(scope="module")
def hw() -> HardwareCatalog:
    return load_hardware()


def test_catalog_has_every_gpu_and_contract_keys(hw):
    assert GPU_IDS <= set(hw.gpus)
    for gid, g in hw.gpus.items():
        dumped = g.model_dump()
        for key in (
            "name",
            "memory_gb",
            "hbm_gb_s",
            "tflops_bf16",
            "tflops_fp8",
            "tflops_int8",
            "tflops_fp4",
            "tdp_w",
            "interconnect_gb_s",
            "tiers",
            "tco",
        ):
            assert key in dumped, (gid, key)
        for tier in g.tiers.values():
            assert tier.source and tier.as_of
    assert hw.exchange_rates.usd_per_cny and hw.exchange_rates.as_of and hw.exchange_rates.source
    assert hw.gpus["cpu-2core"].is_cpu_standin and "CPU" in hw.gpus["cpu-2core"].name
    for t in hw.gpus["cpu-2core"].tiers.values():
        assert 0.05 <= t.usd_per_gpu_hour <= 0.10


@pytest.mark.parametrize(
    "gid, bf16, fp8, hbm, mem, tdp",
    [
        # shared/reference/gpus.md
        ("a100", 312, None, 2039, 80, 400),
        ("h100", 989, 1979, 3350, 80, 700),
        ("h200", 989, 1979, 4800, 141, 700),
        ("h20", 148, 296, 4000, 96, 400),
        ("b200", 2250, 4500, 7700, 180, 1000),
        ("mi300x", 1307, 2615, 5300, 192, 750),
    ],
)
def test_specs_match_reference(hw, gid, bf16, fp8, hbm, mem, tdp):
    g = hw.gpus[gid]
    assert (g.tflops_bf16, g.tflops_fp8, g.hbm_gb_s, g.memory_gb, g.tdp_w) == (bf16, fp8, hbm, mem, tdp)
    assert hw.gpus["b200"].tflops_fp4 == 9000 and hw.gpus["a100"].tflops_int8 == 624


@pytest.mark.parametrize(
    "gid, hyperscaler, neocloud, reserved",
    [
        # SemiAnalysis InferenceX tiers, shared/reference/gpus.md
        ("h100", 1.30, 1.69, 1.30),
        ("h200", 1.41, 1.74, 1.60),
        ("b200", 1.95, 2.34, 2.90),
        ("mi300x", 1.12, 1.40, 1.55),
    ],
)
def test_rental_tiers_match_reference(hw, gid, hyperscaler, neocloud, reserved):
    assert resolve_usd_per_gpu_hour(gid, "hyperscaler", hw) == hyperscaler
    assert resolve_usd_per_gpu_hour(gid, "neocloud", hw) == neocloud
    assert resolve_usd_per_gpu_hour(gid, "reserved", hw) == reserved


def test_tco_h100_by_hand(hw):
    # 32,500 x (1 - 0.10) / (5 x 8,760) = 0.667808 + 1.73 kW x 1.0 x $0.08 = 0.1384 + hosting 0.10 = 0.906208
    assert resolve_usd_per_gpu_hour("h100", "tco", hw) == pytest.approx(0.9062082192, rel=1e-9)


def test_tco_h20_converts_cny_capex(hw):
    # CNY 140,625 x 0.14 = $19,687.50; x 0.9 / 43,800 = 0.404538 + 0.5 x 1.2 x 0.08 = 0.048 + 0.10 = 0.552538
    assert resolve_usd_per_gpu_hour("h20", "tco", hw) == pytest.approx(0.5525376712, rel=1e-9)


def test_unknown_gpu_and_tier_list_allowed(hw):
    with pytest.raises(UserInputError, match=r"gpu: unknown GPU 'h300'; allowed: .*h100"):
        resolve_usd_per_gpu_hour("h300", "neocloud", hw)
    with pytest.raises(
        UserInputError, match=r"tier: unknown tier 'spot' .*allowed: hyperscaler, neocloud.*tco"
    ):
        resolve_usd_per_gpu_hour("h100", "spot", hw)
    with pytest.raises(UserInputError, match="none known; give --usd-per-gpu-hour"):
        resolve_usd_per_gpu_hour("ascend-910b", "neocloud", hw)


def test_price_book_matches_reference():
    pb = load_price_book()
    # shared/reference/prices.md, (input, cached, output) per M tokens
    expected = {
        "glm-4.5@zai": ("USD", 0.60, 0.11, 2.20),
        "glm-4.6@zai": ("USD", 0.60, 0.11, 2.20),
        "glm-4.5-air@zai": ("USD", 0.20, 0.03, 1.10),
        "glm-4.5@bigmodel": ("USD", 0.29, 0.057, 1.14),
        "glm-4.5-air@bigmodel": ("USD", 0.10, 0.02, 0.60),
        "minimax-m2@minimax": ("USD", 0.30, 0.03, 1.20),
        "deepseek-v3.2@deepseek": ("USD", 0.28, 0.028, 0.42),
        "deepseek-v3.2@deepseek-floor": ("CNY", 1.0, 0.2, 2.0),
    }
    for key, (cur, inp, cached, out) in expected.items():
        e = pb.get(key)
        t = e.prices_for(1000)
        assert (e.currency, t.input_per_m, t.cached_input_per_m, t.output_per_m) == (cur, inp, cached, out), (
            key
        )
    aliyun = pb.get("glm-4.5@aliyun")
    assert aliyun.currency == "CNY" and aliyun.prices_for(32000).output_per_m == 14.0
    assert pb.get("glm-4.5-air@aliyun").prices_for(1).input_per_m == 0.8
    assert pb.get("minimax-m2@minimax").cache_write_per_m == 0.375
    for e in pb.prices.values():
        assert e.source and e.as_of


def test_price_book_models_are_catalog_models():
    from bench.config.catalog import load_models

    known = set(load_models()) | {"deepseek-v3.2"}  # DeepSeek entries are price comparators only
    assert set(load_price_book().models()) <= known


def test_unknown_model_and_provider_list_allowed():
    pb = load_price_book()
    with pytest.raises(UserInputError, match=r"unknown model 'glm-9'; allowed: .*glm-4.5-air"):
        pb.get("glm-9@zai")
    with pytest.raises(
        UserInputError, match=r"unknown provider 'acme' for glm-4.5-air; allowed: aliyun, bigmodel, zai"
    ):
        pb.get("glm-4.5-air@acme")
    with pytest.raises(UserInputError, match="must be <model>@<provider>"):
        pb.get("glm-4.5-air")


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_hardware_unknown_field_names_allowed(tmp_path):
    p = _write(
        tmp_path,
        "hw.yaml",
        """
        gpus:
          x1:
            name: X
            memory_gb: 10
            hbm_gb_s: 100
            tiers:
              neocloud: {usd_per_gpu_hour: 1.0, source: s, as_of: "2026-01-01", price: 3}
    """,
    )
    with pytest.raises(
        UserInputError, match=r"gpus\.x1\.tiers\.neocloud\.price: unknown field; allowed: usd_per_gpu_hour"
    ):
        load_hardware(p)


def test_hardware_rejects_non_positive_price(tmp_path):
    p = _write(
        tmp_path,
        "hw.yaml",
        """
        gpus:
          x1: {name: X, memory_gb: 10, hbm_gb_s: 100,
               tiers: {neocloud: {usd_per_gpu_hour: 0, source: s, as_of: "2026-01-01"}}}
    """,
    )
    with pytest.raises(UserInputError, match=r"usd_per_gpu_hour: Input should be greater than 0"):
        load_hardware(p)


def test_cny_tco_without_exchange_rate_is_an_error(tmp_path):
    p = _write(
        tmp_path,
        "hw.yaml",
        """
        gpus:
          x1:
            name: X
            memory_gb: 10
            hbm_gb_s: 100
            tco: {capex_cny: 100000, amortization_years: 5, kw_all_in: 0.5, usd_per_kwh: 0.1,
                  hosting_usd_per_gpu_hour: 0.1}
    """,
    )
    cat = load_hardware(p)
    with pytest.raises(UserInputError, match="usd_per_cny"):
        resolve_usd_per_gpu_hour("x1", "tco", cat)


def test_tco_needs_one_of_each_currency_pair(tmp_path):
    p = _write(
        tmp_path,
        "hw.yaml",
        """
        gpus:
          x1:
            name: X
            memory_gb: 10
            hbm_gb_s: 100
            tco: {capex_usd: 1000, capex_cny: 7000, amortization_years: 5, kw_all_in: 0.5, usd_per_kwh: 0.1,
                  hosting_usd_per_gpu_hour: 0.1}
    """,
    )
    with pytest.raises(UserInputError, match="give exactly one of capex_usd or capex_cny"):
        load_hardware(p)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            """
        prices:
          m@p: {currency: EUR, as_of: "2026", source: s, input_per_m: 1, output_per_m: 2}
     """,
            "currency: Input should be 'USD' or 'CNY'",
        ),
        (
            """
        prices:
          m@p: {currency: USD, as_of: "2026", source: s, input_per_m: 1, output_per_m: 2,
                tiers: [{max_input_tokens: 10, input_per_m: 1, output_per_m: 2}]}
     """,
            "either flat prices",
        ),
        (
            """
        prices:
          m@p:
            currency: USD
            as_of: "2026"
            source: s
            tiers:
              - {max_input_tokens: 100, input_per_m: 1, output_per_m: 2}
              - {max_input_tokens: 10, input_per_m: 1, output_per_m: 2}
     """,
            "increasing order",
        ),
        (
            """
        prices:
          ModelX: {currency: USD, as_of: "2026", source: s, input_per_m: 1, output_per_m: 2}
     """,
            "<model>@<provider>",
        ),
        (
            """
        prices:
          m@p: {currency: USD, as_of: "2026", source: s, input_per_m: -1, output_per_m: 2}
     """,
            "input_per_m: Input should be greater than or equal to 0",
        ),
    ],
)
def test_price_book_validation(tmp_path, body, message):
    p = _write(tmp_path, "prices.yaml", body)
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_price_book(p)


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        load_price_book(tmp_path / "nope.yaml")
