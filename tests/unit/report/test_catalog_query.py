"""`maas-bench query`: SQL over the catalog's `points` view, the money columns priced at the chosen tier, U
and price (hand-computed from the fixture of test_results_catalog.py), and nothing but one read-only SELECT."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.errors import UserInputError
from bench.report import catalog_query
from bench.report.catalog import load_catalog
from bench.report.catalog_query import CatalogPricing, check_read_only, run_query
from tests.unit.report.test_results_catalog import USD_PER_M_OUTPUT, make_catalog

runner = CliRunner()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_catalog(tmp_path / "results")


def _by_point(root: Path, sql: str, **pricing: object) -> dict[str, tuple]:
    res = run_query(load_catalog([root]), sql, CatalogPricing(**pricing))  # type: ignore[arg-type]
    return {r[0]: r[1:] for r in res.rows}


def test_cost_per_m_output_at_each_runs_rate_and_default_u(root: Path) -> None:
    got = _by_point(root, "SELECT point_id, cost_usd_per_m_output_tokens, utilization, priced_tier FROM points")
    for name, want in USD_PER_M_OUTPUT.items():
        cost, u, tier = got[f"pt-{name}"]
        assert cost == pytest.approx(want, rel=1e-4)
        assert (u, tier) == (0.4, "run")
    assert got["pt-X"][0] is None  # the failed point is listed, unpriced


def test_utilization_tier_and_price_are_applied(root: Path) -> None:
    # U = 1: A costs $2.00 / (1000 tok/s x 3600 s / 1e6) = $0.5556 per M output tokens
    got = _by_point(root, "SELECT point_id, cost_usd_per_m_output_tokens FROM points", utilization=1.0)
    assert got["pt-A"][0] == pytest.approx(2.0 / 3.6, rel=1e-6)
    # tier owning-neocloud: H100 at $1.55/GPU-hour (InferenceX costn; docs/economics.md worked example, row 2)
    got = _by_point(root, "SELECT point_id, cost_usd_per_m_output_tokens, cost_usd_per_gpu_hour FROM points "
                    "WHERE point_id = 'pt-A'", tier="owning-neocloud")
    assert got["pt-A"] == (pytest.approx(1.076389, rel=1e-5), pytest.approx(1.55))
    # margin at glm-4.5-air@zai ($0.20 in, $1.10 out per M): revenue (2000 x 0.20 + 500 x 1.10) / 1e6 = $0.00095
    # a request; cost 500 / 1000 x 2.00 / 3600 / 0.4 = $0.00069444; margin 1 - 0.00069444 / 0.00095 = 26.90%
    got = _by_point(root, "SELECT point_id, revenue_usd_per_request, cost_usd_per_request, gross_margin, price_key "
                    "FROM points WHERE point_id = 'pt-A'", price="glm-4.5-air@zai")
    rev, cost, margin, key = got["pt-A"]
    assert (rev, cost, margin) == (pytest.approx(0.00095), pytest.approx(0.000694444, rel=1e-5),
                                   pytest.approx(0.269006, rel=1e-5))
    assert key == "glm-4.5-air@zai"


def test_cheapest_under_an_slo_across_runs(root: Path) -> None:
    sql = ("SELECT point_id, run_dir FROM points WHERE ttft_ms_p90 <= 500 AND tpot_ms_p90 <= 30 "
           "ORDER BY cost_usd_per_m_output_tokens LIMIT 1")
    assert _by_point(root, sql) == {"pt-D": ("h200/r2-h200",)}  # D 1.157 < A 1.389 < C 2.778
    sql = "SELECT point_id FROM points WHERE source = 'measured' AND tpot_ms_p90 <= 100 ORDER BY " \
          "cost_usd_per_m_output_tokens LIMIT 1"
    assert list(_by_point(root, sql)) == ["pt-B"]  # F (virtual, 0.463) is left out by source


def test_money_is_computed_only_for_the_rows_a_query_keeps(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    priced: list[int] = []
    real = catalog_query.money_rows

    def counting(records, pricing):  # noqa: ANN001, ANN202
        priced.append(len(records))
        return real(records, pricing)

    monkeypatch.setattr(catalog_query, "money_rows", counting)
    cat = load_catalog([root])
    assert run_query(cat, "SELECT count(*) FROM points", CatalogPricing()).rows == [(7,)]
    assert priced == []  # no money column named: never priced
    res = run_query(cat, "SELECT min(cost_usd_per_m_output_tokens) FROM points WHERE gpu_type = 'h200'",
                    CatalogPricing())
    assert res.rows[0][0] == pytest.approx(USD_PER_M_OUTPUT["E"], rel=1e-4)
    assert sum(priced) == 2  # only D and E


@pytest.mark.parametrize("sql", [
    "INSERT INTO points VALUES (1)", "CREATE TABLE t AS SELECT 1", "COPY (SELECT 1) TO 'out.csv'",
    "ATTACH 'other.db'", "INSTALL httpfs", "LOAD httpfs", "PRAGMA version", "SET threads = 1",
    "SELECT 1; SELECT 2", "DROP VIEW points", "EXPLAIN SELECT 1", "", "SELEC 1",
])
def test_anything_but_one_select_is_refused(sql: str) -> None:
    with pytest.raises(UserInputError, match="^query: "):
        check_read_only(sql)


def test_a_root_read_in_memory_is_queried_the_same(root: Path) -> None:
    cat = load_catalog([root], write=False)  # as a root that cannot be written is read
    assert not (root / ".catalog").exists() and cat.files == []
    sql = "SELECT point_id, cost_usd_per_m_output_tokens FROM points WHERE point_id = 'pt-E'"
    assert run_query(cat, sql, CatalogPricing()).rows == [("pt-E", pytest.approx(USD_PER_M_OUTPUT["E"], rel=1e-4))]


def test_with_select_is_accepted(root: Path) -> None:
    sql = "WITH ok AS (SELECT * FROM points WHERE status = 'ok') SELECT count(*) AS n FROM ok"
    assert run_query(load_catalog([root]), sql, CatalogPricing()).rows == [(6,)]


def test_a_select_cannot_read_files_or_turn_access_back_on(root: Path) -> None:
    cat = load_catalog([root])
    for sql in (f"SELECT * FROM read_parquet('{root}/r1-h100/points.parquet')",
                f"SELECT * FROM read_text('{root}/r1-h100/sweep.yaml')",
                "SELECT * FROM duckdb_settings() WHERE name = 'x' AND set_config('enable_external_access', 'true')"):
        with pytest.raises(UserInputError, match="^query: "):
            run_query(cat, sql, CatalogPricing())


def test_cli_refusal_is_one_line_exit_2_and_writes_nothing(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["query", "COPY (SELECT 1) TO 'leak.csv'", str(root)])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "read-only SELECT" in res.output
    assert not (tmp_path / "leak.csv").exists()
    assert not (root / ".catalog").exists()  # refused before any file was read or the index written


@pytest.mark.parametrize("flags, what", [
    (["--tier", "gold-plated"], "--tier"), (["--price", "nope@nowhere"], "price"),
    (["--utilization", "0"], "--utilization"), (["--json", "--csv"], "not both"),
])
def test_cli_bad_flags_are_one_line(root: Path, flags: list[str], what: str) -> None:
    res = runner.invoke(app, ["query", "SELECT 1", str(root), *flags])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and what in res.output


def test_cli_json_and_csv(root: Path) -> None:
    sql = "SELECT point_id, gross_margin FROM points WHERE point_id IN ('pt-A', 'pt-X') ORDER BY point_id"
    res = runner.invoke(app, ["query", sql, str(root), "--json", "--price", "glm-4.5-air@zai"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows[0]["point_id"] == "pt-A" and rows[0]["gross_margin"] == pytest.approx(0.269006, rel=1e-5)
    assert rows[1] == {"point_id": "pt-X", "gross_margin": None}
    res = runner.invoke(app, ["query", sql, str(root), "--csv", "--price", "glm-4.5-air@zai"])
    assert res.exit_code == 0, res.output
    table = list(csv.reader(io.StringIO(res.stdout)))
    assert table[0] == ["point_id", "gross_margin"] and table[2] == ["pt-X", ""]
    assert float(table[1][1]) == pytest.approx(0.269006, rel=1e-5)
