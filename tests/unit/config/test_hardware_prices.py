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
    "gid, owning_h, owning_n, rental_3yr",
    [
        # SemiAnalysis InferenceX constants, July-2026 version (InferenceX-app packages/constants/src,
        # "SemiAnalysis Market July 2026 Pricing Surveys"): costh / costn / costr
        ("h100", 1.17, 1.55, 1.78),
        ("h200", 1.22, 1.59, 2.05),
        ("b200", 1.73, 2.07, 2.60),
        ("mi300x", 0.95, 1.16, 1.30),
    ],
)
def test_inferencex_tiers_are_named_owning_and_rental(hw, gid, owning_h, owning_n, rental_3yr):
    assert resolve_usd_per_gpu_hour(gid, "owning-hyperscaler", hw) == owning_h
    assert resolve_usd_per_gpu_hour(gid, "owning-neocloud", hw) == owning_n
    assert resolve_usd_per_gpu_hour(gid, "rental-3yr", hw) == rental_3yr
    # the old names still work, as deprecated aliases of the same figures
    assert resolve_usd_per_gpu_hour(gid, "hyperscaler", hw) == owning_h
    assert resolve_usd_per_gpu_hour(gid, "neocloud", hw) == owning_n
    assert resolve_usd_per_gpu_hour(gid, "reserved", hw) == rental_3yr


def test_deprecated_tier_queues_one_note(hw):
    from bench.config import hardware as h

    h._alias_noted.discard("reserved")
    h.PENDING_NOTES.clear()
    assert hw.canonical_tier("h100", "reserved") == "rental-3yr"
    assert hw.canonical_tier("h100", "reserved") == "rental-3yr"
    assert len(h.PENDING_NOTES) == 1 and "'rental-3yr'" in h.PENDING_NOTES[0]
    h.PENDING_NOTES.clear()


def test_on_demand_tiers_have_sources_and_source_dates(hw):
    # on-demand rental prices, each with the source's own date (research notes, recorded 2026-11-24)
    h100 = hw.gpus["h100"].tiers
    assert h100["on-demand"].usd_per_gpu_hour == 2.69 and h100["on-demand"].source_date == "2026-05-22"
    assert h100["on-demand-lambda"].usd_per_gpu_hour == 3.78
    assert h100["capacity-block"].usd_per_gpu_hour == pytest.approx(39.33 / 8, abs=1e-3)
    assert h100["capacity-block"].source_date == "2024-12"  # AWS list valid until 2025-01-01, not "2026"
    assert hw.gpus["h200"].tiers["capacity-block"].usd_per_gpu_hour == pytest.approx(43.26 / 8, abs=1e-3)
    for gid, g in hw.gpus.items():
        for name, t in g.tiers.items():
            assert t.source_date, (gid, name)
            assert "shared/reference" not in t.source and ".md" not in t.source, (gid, name)
        if g.tco is not None:
            assert g.tco.source_date and "shared/reference" not in g.tco.source, gid


def test_default_tier_falls_back_and_says_so(hw):
    assert hw.default_tier("h100") == ("owning-neocloud", None)
    tier, note = hw.default_tier("h20")  # no rental price for H20 anywhere: priced at tco, said
    assert tier == "tco" and "no 'owning-neocloud' tier" in note
    with pytest.raises(UserInputError, match="has no cost tiers"):
        hw.default_tier("ascend-910b")


def _annual_payment_by_npv(capex: float, residual: float, r: float, n: int) -> float:
    """Independent of the closed form: the level payment P whose present value, plus the discounted
    residual, repays the capex: sum P/(1+r)^t (t=1..n) + residual/(1+r)^n = capex."""
    pv_of_one_per_year = sum(1 / (1 + r) ** t for t in range(1, n + 1))
    return (capex - residual / (1 + r) ** n) / pv_of_one_per_year


def test_tco_h100_by_hand(hw):
    # capex 32,500, residual 10% = 3,250, r = 0.10, n = 5 years:
    # closed form (C - R/(1+r)^n) x r / (1 - (1+r)^-n) = (32,500 - 3,250 / 1.61051) x 0.1 / 0.3790787
    #   = 30,482.006 x 0.2637975 = 8,041.07 per year -> / 8,760 h = 0.917930 $/GPU-h
    # + energy 1.37 kW x 1.0 x $0.08 = 0.1096 + hosting 0.10 = 1.127530
    annual = _annual_payment_by_npv(32500, 3250, 0.10, 5)
    assert annual == pytest.approx(8041.07, abs=0.01)
    assert resolve_usd_per_gpu_hour("h100", "tco", hw) == pytest.approx(annual / 8760 + 0.1096 + 0.10, rel=1e-12)
    assert resolve_usd_per_gpu_hour("h100", "tco", hw) == pytest.approx(1.12753, abs=1e-5)


def test_tco_cost_of_capital_golden_and_straight_line():
    from bench.econ.cost import tco_usd_per_gpu_hour

    # C = 10,000, R = 0, r = 0.08, n = 3: annuity 10,000 x 0.08 / (1 - 1.08^-3) = 3,880.34 per year
    b = tco_usd_per_gpu_hour(10000, 3, 0.0, 1.0, 1.0, 0.0, 0.0, cost_of_capital_rate=0.08)
    assert b.capital_usd_per_gpu_hour * 8760 == pytest.approx(3880.335, abs=1e-3)
    # r = 0 is straight line: (10,000 - 1,000) / 3 = 3,000 per year
    b0 = tco_usd_per_gpu_hour(10000, 3, 0.1, 1.0, 1.0, 0.0, 0.0, cost_of_capital_rate=0.0)
    assert b0.capital_usd_per_gpu_hour * 8760 == pytest.approx(3000.0, rel=1e-12)


def test_tco_h20_converts_cny_capex(hw):
    # CNY 140,625 x 0.14 = $19,687.50, residual $1,968.75, r = 0.10, n = 5
    # annual = (19,687.50 - 1,968.75 / 1.61051) x 0.2637975 = 4,871.04 -> / 8,760 = 0.556054
    # + 0.5 kW x 1.2 x 0.08 = 0.048 + hosting 0.10 = 0.704054
    annual = _annual_payment_by_npv(19687.5, 1968.75, 0.10, 5)
    assert resolve_usd_per_gpu_hour("h20", "tco", hw) == pytest.approx(annual / 8760 + 0.048 + 0.10, rel=1e-12)
    assert resolve_usd_per_gpu_hour("h20", "tco", hw) == pytest.approx(0.704054, abs=1e-5)


def test_unknown_gpu_and_tier_list_allowed(hw):
    with pytest.raises(UserInputError, match=r"gpu: unknown GPU 'h300'; allowed: .*h100"):
        resolve_usd_per_gpu_hour("h300", "owning-neocloud", hw)
    with pytest.raises(
        UserInputError, match=r"tier: unknown tier 'spot' .*allowed: owning-hyperscaler, owning-neocloud.*tco"
    ):
        resolve_usd_per_gpu_hour("h100", "spot", hw)
    with pytest.raises(UserInputError, match="none known; give --usd-per-gpu-hour"):
        resolve_usd_per_gpu_hour("ascend-910b", "neocloud", hw)


def test_price_book_matches_sources():
    pb = load_price_book()
    # (currency, input, cached, output) per M tokens for a 1,000-in / 100-out request
    expected = {
        "glm-4.5@zai": ("USD", 0.60, 0.11, 2.20),
        "glm-4.6@zai": ("USD", 0.60, 0.11, 2.20),
        "glm-4.5-air@zai": ("USD", 0.20, 0.03, 1.10),
        # bigmodel.cn CNY list, tier input < 32K and output < 200
        "glm-4.6@bigmodel": ("CNY", 2.0, 0.4, 8.0),
        "glm-4.5-air@bigmodel": ("CNY", 0.8, 0.16, 2.0),
        "minimax-m2@minimax": ("USD", 0.30, 0.03, 1.20),
        "deepseek-v3.2@deepseek": ("USD", 0.28, 0.028, 0.42),
        # DeepSeek's official CNY list for V3.2 (not the old V3 promo 'floor' of CNY 1 / 2)
        "deepseek-v3.2@deepseek-cny": ("CNY", 2.0, 0.2, 3.0),
    }
    for key, (cur, inp, cached, out) in expected.items():
        e = pb.get(key)
        t = e.prices_for(1000, 100)
        assert (e.currency, t.input_per_m, t.cached_input_per_m, t.output_per_m) == (cur, inp, cached, out), key
    assert "deepseek-v3.2@deepseek-floor" not in pb.prices
    aliyun = pb.get("glm-4.5@aliyun")
    assert aliyun.currency == "CNY" and aliyun.prices_for(32000).output_per_m == 14.0
    assert aliyun.prices_for(32001).input_per_m == 4.0 and aliyun.prices_for(98304).output_per_m == 16.0
    with pytest.raises(UserInputError, match="max_input_tokens 98304"):
        aliyun.prices_for(98305)
    assert pb.get("glm-4.5-air@aliyun").prices_for(1).input_per_m == 0.8
    assert pb.get("glm-4.5-air@aliyun").prices_for(50000).output_per_m == 8.0
    assert pb.get("minimax-m2@minimax").cache_write_per_m == 0.375
    for key, e in pb.prices.items():
        assert e.source and e.as_of and e.source_date, key
        assert "shared/reference" not in e.source and ".md" not in e.source, key


def test_bigmodel_tiers_by_input_and_output_length():
    # bigmodel.cn GLM-4.6/4.7 table: input [0,32K) x output [0,200) -> 2 / 0.4 / 8;
    # input [0,32K) x output [200+) -> 3 / 0.6 / 14; input [32K,200K) -> 4 / 0.8 / 16 (CNY per M)
    e = load_price_book().get("glm-4.6@bigmodel")
    assert e.prices_for(31999, 199).output_per_m == 8.0
    assert e.prices_for(31999, 200).output_per_m == 14.0 and e.prices_for(100, 5000).input_per_m == 3.0
    assert e.prices_for(32000, 10).output_per_m == 16.0 and e.prices_for(32000, 10).cached_input_per_m == 0.8
    with pytest.raises(UserInputError, match="max_input_tokens 199999"):
        e.prices_for(200000, 10)


@pytest.mark.parametrize("tiers, msg", [
    # an input group whose last tier bounds the output leaves long outputs unpriced
    ("[{max_input_tokens: 10, max_output_tokens: 5, input_per_m: 1, output_per_m: 2}]", "last must be null"),
    # output bounds must increase within an input group
    ("[{max_input_tokens: 10, max_output_tokens: 9, input_per_m: 1, output_per_m: 2},"
     " {max_input_tokens: 10, max_output_tokens: 5, input_per_m: 1, output_per_m: 2},"
     " {max_input_tokens: 10, input_per_m: 1, output_per_m: 2}]", "must increase"),
    # one input bound's tiers must be contiguous
    ("[{max_input_tokens: 10, max_output_tokens: 5, input_per_m: 1, output_per_m: 2},"
     " {max_input_tokens: 20, input_per_m: 1, output_per_m: 2},"
     " {max_input_tokens: 10, input_per_m: 1, output_per_m: 2}]", "increasing order"),
])
def test_output_tier_schema_errors(tmp_path, tiers, msg):
    f = tmp_path / "prices.yaml"
    f.write_text(f"prices:\n  m@p: {{currency: CNY, as_of: '2026-01-01', source: s, tiers: {tiers}}}\n")
    with pytest.raises(UserInputError, match=msg):
        load_price_book(f)


def test_price_book_models_are_catalog_models():
    from bench.config.catalog import load_models

    # price comparators only: DeepSeek, and GLM-5.3 / GLM-5-Turbo (priced, architecture unpublished)
    known = set(load_models()) | {"deepseek-v3.2", "glm-5.3", "glm-5-turbo"}
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


def _one_gpu_catalog(tmp_path, fields: str):
    """A hardware.yaml with one GPU `x1` (name, memory_gb, hbm_gb_s filled in) plus `fields` under it."""
    return _write(tmp_path, "hw.yaml", "gpus:\n  x1:\n    name: X\n    memory_gb: 10\n    hbm_gb_s: 100\n"
                  + textwrap.indent(textwrap.dedent(fields).strip("\n"), "    ") + "\n")


@pytest.mark.parametrize("fields, message", [
    pytest.param(
        """
        tiers:
          neocloud: {usd_per_gpu_hour: 1.0, source: s, as_of: "2026-01-01", price: 3}
        """,
        r"gpus\.x1\.tiers\.neocloud\.price: unknown field; allowed: usd_per_gpu_hour",
        id="unknown-field-names-allowed",
    ),
    pytest.param(
        'tiers: {neocloud: {usd_per_gpu_hour: 0, source: s, as_of: "2026-01-01"}}',
        r"usd_per_gpu_hour: Input should be greater than 0",
        id="non-positive-price",
    ),
    pytest.param(
        """
        tco: {capex_usd: 1000, capex_cny: 7000, amortization_years: 5, kw_all_in: 0.5, usd_per_kwh: 0.1,
              hosting_usd_per_gpu_hour: 0.1}
        """,
        "give exactly one of capex_usd or capex_cny",
        id="tco-needs-one-of-each-currency-pair",
    ),
])
def test_bad_hardware_entry_is_a_user_error(tmp_path, fields, message):
    with pytest.raises(UserInputError, match=message):
        load_hardware(_one_gpu_catalog(tmp_path, fields))


def test_cny_tco_without_exchange_rate_is_an_error(tmp_path):
    cat = load_hardware(_one_gpu_catalog(tmp_path, """
        tco: {capex_cny: 100000, amortization_years: 5, kw_all_in: 0.5, usd_per_kwh: 0.1,
              hosting_usd_per_gpu_hour: 0.1}
        """))
    with pytest.raises(UserInputError, match="usd_per_cny"):
        resolve_usd_per_gpu_hour("x1", "tco", cat)


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
