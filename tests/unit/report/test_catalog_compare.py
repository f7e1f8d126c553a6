"""`maas-bench compare`'s page data (bench.report.compare) without a browser: the money and SLO flags of each
point, links relative to the page, and text from the data never read as markup. The browser test is
tests/integration/report/test_compare_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.report.catalog import load_catalog
from bench.report.catalog_query import CatalogPricing
from bench.report.compare import build_compare, page_data
from tests.unit.report.test_results_catalog import USD_PER_M_OUTPUT, make_catalog, point_row, write_run


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="compare-data">(.*?)</script>', html, flags=re.DOTALL)
    assert m is not None
    return json.loads(m.group(1))


def test_page_data_money_and_slo_flags(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "results")
    data = page_data(load_catalog([root]), CatalogPricing().check(), None, tmp_path / "page")
    pts = data["points"]
    by = {p.removeprefix("pt-"): i for i, p in enumerate(pts["point"])}
    assert set(by) == set(USD_PER_M_OUTPUT)  # the failed point X is left out ...
    assert data["skipped_points"] == 1  # ... and counted
    for name, want in USD_PER_M_OUTPUT.items():
        assert pts["usd_per_m_output"][by[name]] == pytest.approx(want, rel=1e-4)
    assert [s["label"] for s in data["slos"]] == ["interactive", "standard", "batch"]
    # one flag per tier: interactive (TTFT p90 <= 500, TPOT p90 <= 30), standard (<= 2000, <= 100), batch
    flags = {name: pts["slo"][i] for name, i in by.items()}
    assert flags == {"A": "111", "B": "011", "C": "111", "D": "111", "E": "001", "F": "011"}
    assert pts["source"][by["F"]] == "virtual" and pts["engine"][by["F"]] == "virtual"
    assert pts["quant"][by["D"]] == "bfloat16 (unquantized)"
    assert pts["link"][by["D"]] == "../results/h200/r2-h200/"


def test_text_from_the_data_is_never_markup(tmp_path: Path) -> None:
    root = tmp_path / "<b>results"
    row = point_row("A", "r1-h100", 1000.0, 50.0, 400.0, 25.0)
    evil = "</script><img src=x onerror=alert(1)>"
    row.update(model=evil, workload="a&b <i>", run_id="my run")
    write_run(root, "r1-h100", [row])
    (root / "r1-h100").rename(root / "my run")
    res = build_compare([root], tmp_path / "page")
    html = res.html_path.read_text()
    assert "<img src=x" not in html and "<i>" not in html and "<b>" not in html
    assert "&lt;b&gt;results" in html  # the title: escaped by the template
    assert html.count("</script>") == 2  # the data block's and the code's own; the model name did not end one
    data = _data(html)
    assert data["points"]["model"] == [evil] and data["points"]["workload"] == ["a&b <i>"]
    assert data["points"]["link"] == ["../%3Cb%3Eresults/my%20run/"]
    assert "innerHTML" not in html  # the page writes data with textContent / setAttribute only


def test_cli_compare_writes_one_self_contained_page(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "results")
    res = CliRunner().invoke(app, ["compare", str(root), "--out", str(tmp_path / "page"), "--json",
                                   "--slo", "tight:tpot_ms<=21", "--utilization", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["points"], out["runs"], out["skipped_points"], out["slos"]) == (6, 3, 1, ["tight"])
    html = (tmp_path / "page" / "compare.html").read_text()
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)  # nothing from a network
    data = _data(html)
    assert [f == "1" for f in data["points"]["slo"]] == [p in ("pt-D",) for p in data["points"]["point"]]
    assert data["pricing"]["utilization"] == 1.0


def test_cli_compare_bad_out_and_empty_root(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "results")
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(app, ["compare", str(root), "--out", str(tmp_path / "file")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "is a file" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 2 and "no run found" in res.output


def test_each_runs_own_slo_is_a_tier_with_a_distinct_label(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for run, (ttft, tpot) in {"r1-h100": (1000.0, 50.0), "r2-h200": (3000.0, 150.0)}.items():
        row = point_row("A", run, 1000.0, 50.0, 400.0, 25.0)
        row.update(slo_ttft_ms=ttft, slo_tpot_ms=tpot, point_id=f"pt-{run}")
        write_run(root, run, [row])
    data = page_data(load_catalog([root]), CatalogPricing().check(), None, tmp_path / "page")
    labels = [s["label"] for s in data["slos"]]
    # the report's ladder with each run's own SLO inserted before batch, told apart by their limits
    assert labels == ["interactive", "standard", "sweep SLO: TTFT p90 <= 1000 ms, TPOT p90 <= 50 ms",
                      "sweep SLO: TTFT p90 <= 3000 ms, TPOT p90 <= 150 ms", "batch"]
    assert data["points"]["slo"] == ["11111", "11111"]  # TTFT 400, TPOT 25 meet every tier
