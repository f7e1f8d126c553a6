"""`maas-bench cost | margin | plan` through typer's CliRunner: numbers, --json, and exit 2 on bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import base as cfgmod
from tests.unit.econ.golden_points import golden_points

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def run_json(*args: str):
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def bad(args: list[str], *needles: str) -> None:
    r = run(*args)
    assert r.exit_code == 2, r.output
    for n in needles:
        assert n in r.output, r.output


def test_cost_golden():
    rows = run_json("cost", "--gpu", "h100", "--tier", "owning-neocloud", "--output-tok-s-per-gpu", "1000",
                    "--utilization", "1")
    # $1.55 / 3.6 M tokens per GPU-hour = $0.430556 per M output tokens (U = 1 asked for)
    assert len(rows) == 1 and rows[0]["usd_per_m_output_tokens"] == pytest.approx(0.4305555556, rel=1e-9)
    assert "SemiAnalysis" in rows[0]["source"] and rows[0]["utilization"] == 1.0


def test_cost_default_utilization_and_token_kinds():
    # default U = 0.8 at peak / peak-to-average 2 = 0.4: $1.55 / (3.6 x 0.4) = $1.076389 per M
    rows = run_json("cost", "--gpu", "h100", "--tier", "owning-neocloud", "--total-tok-s-per-gpu", "1000")
    assert rows[0]["utilization"] == 0.4 and "usd_per_m_output_tokens" not in rows[0]
    assert rows[0]["usd_per_m_total_tokens"] == pytest.approx(1.0763888889, rel=1e-9)
    r = run("cost", "--gpu", "h100", "--tier", "owning-neocloud", "--output-tok-s-per-gpu", "1000")
    assert r.exit_code == 0 and "at U = 0.4" in r.stdout and "output tokens" in r.stdout
    # the old flag and the old tier name still work, each with a one-line note on stderr
    r = run("cost", "--gpu", "h100", "--tier", "neocloud", "--tok-s-per-gpu", "1000", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["usd_per_m_output_tokens"] == pytest.approx(1.0763888889)
    assert "--tok-s-per-gpu is deprecated" in r.stderr


def test_cost_all_tiers_and_table():
    rows = run_json("cost", "--gpu", "h200", "--output-tok-s-per-gpu", "1000", "--utilization", "0.5")
    tiers = [r["tier"] for r in rows]
    assert tiers[:3] == ["owning-hyperscaler", "owning-neocloud", "rental-3yr"] and tiers[-1] == "tco"
    assert "on-demand" in tiers and "capacity-block" in tiers
    # owning-neocloud $1.59 at 1000 tok/s and U = 0.5: 1.59 / 1.8 = 0.883333
    assert rows[1]["usd_per_m_output_tokens"] == pytest.approx(0.8833333333, rel=1e-9)
    r = run("cost", "--gpu", "h200", "--output-tok-s-per-gpu", "1000")
    assert r.exit_code == 0 and "owning-neocloud" in r.output


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--gpu", "h100", "--tok-s-per-gpu", "0"], ["--tok-s-per-gpu: must be in [0.001, 1e+06] (got "]),
        (["--gpu", "h100", "--tok-s-per-gpu", "-10"], ["--tok-s-per-gpu: must be in [0.001, 1e+06] (got "]),
        (
            ["--gpu", "h100", "--tok-s-per-gpu", "100", "--utilization", "1.5"],
            ["--utilization: must be in [0.001, 1] (got "],
        ),
        (
            ["--gpu", "h100", "--tok-s-per-gpu", "100", "--utilization", "0"],
            ["--utilization: must be in [0.001, 1] (got "],
        ),
        (["--gpu", "h300", "--tok-s-per-gpu", "100"], ["unknown GPU 'h300'", "allowed:", "h200"]),
        (["--gpu", "h100", "--tier", "spot", "--tok-s-per-gpu", "100"], ["unknown tier 'spot'", "neocloud"]),
        (["--usd-per-gpu-hour", "0", "--tok-s-per-gpu", "100"],
         ["--usd-per-gpu-hour: must be in [0.001, 1000] (got 0)"]),
    ],
)
def test_cost_bad_input_exit_2(args, needles):
    bad(["cost", *args], *needles)


WHATIF = [
    "margin",
    "--price",
    "glm-4.5-air@zai",
    "--usd-per-gpu-hour",
    "1.74",
    "--output-tok-s-per-gpu",
    "1000",
    "--input-tokens",
    "2000",
    "--output-tokens",
    "500",
]


def test_margin_whatif_golden():
    out = run_json(*WHATIF, "--utilization", "1.0", "--sensitivity", "--curve")
    # revenue 0.00095, cost 0.5 GPU-s x 1.74/3600 = 0.000241667 -> margin 1 - 0.254386 = 0.745614
    assert out["margin"]["gross_margin"] == pytest.approx(0.7456140351, rel=1e-9)
    # break-even utilization = 0.254386; price falls 50%: margin 2 x 0.745614 - 1 = 0.491228
    assert out["break_even"]["utilization"] == pytest.approx(0.2543859649, rel=1e-9)
    assert out["price_decline"]["0.5"][1]["gross_margin"] == pytest.approx(0.4912280702, rel=1e-9)
    assert len(out["curve"]) == 20 and len(out["sensitivity"]) == 5


def test_margin_whatif_table_and_subscription():
    r = run(*WHATIF, "--subscription-fee", "10", "--requests-per-month", "10000")
    assert r.exit_code == 0, r.output
    assert "Break-even" in r.output and "Subscriber" in r.output
    out = run_json(*WHATIF, "--subscription-fee", "10", "--requests-per-month", "10000")
    # at the default U = 0.4: 10,000 x $0.000241667 / 0.4 = $6.04167 against a $10 fee -> 39.58%
    assert out["subscription"]["one_subscriber"]["gross_margin"] == pytest.approx(0.3958333333)
    assert "39.6%" in r.stdout and "at U = 0.4" in r.stdout  # margins print as percentages


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ["--price", "glm-9@zai", "--gpu", "h200", "--tok-s-per-gpu", "100"],
            ["unknown model 'glm-9'", "glm-4.5-air"],
        ),
        (
            ["--price", "glm-4.5-air@acme", "--gpu", "h200", "--tok-s-per-gpu", "100"],
            ["unknown provider 'acme'", "aliyun, bigmodel, zai"],
        ),
        (
            ["--price", "glm-4.5-air@zai", "--gpu", "h200", "--tok-s-per-gpu", "0"],
            ["--tok-s-per-gpu: must be in [0.001, 1e+06] (got "],
        ),
        (
            ["--price", "glm-4.5-air@zai", "--gpu", "h200", "--tok-s-per-gpu", "100", "--utilization", "2"],
            ["--utilization: must be in [0.001, 1] (got "],
        ),
        (
            ["--price", "glm-4.5-air@zai", "--gpu", "h200", "--tier", "spot", "--tok-s-per-gpu", "100"],
            ["unknown tier 'spot'"],
        ),
        (["--price", "glm-4.5-air@zai", "--gpu", "h200"], ["give --output-tok-s-per-gpu"]),
        (
            ["--price", "glm-4.5-air@zai", "--gpu", "h200", "--tok-s-per-gpu", "100", "--cached-share", "2"],
            ["--cached-share: must be in [0, 1] (got 2)"],
        ),
    ],
)
def test_margin_bad_input_exit_2(args, needles):
    bad(["margin", *args], *needles)


def test_mixed_currency_without_rate_exit_2(tmp_path, monkeypatch):
    # a hardware file without exchange rate + the real price book: a CNY price cannot be compared
    shutil.copy(cfgmod.CONFIG_DIR / "prices.yaml", tmp_path / "prices.yaml")
    text = (cfgmod.CONFIG_DIR / "hardware.yaml").read_text().replace("usd_per_cny: 0.14", "usd_per_cny: null")
    (tmp_path / "hardware.yaml").write_text(text)
    monkeypatch.setattr(cfgmod, "CONFIG_DIR", tmp_path)
    bad(
        ["margin", "--price", "glm-4.5-air@aliyun", "--gpu", "h200", "--tok-s-per-gpu", "100"],
        "CNY",
        "usd_per_cny",
    )
    # with the rate given on the command line it works:
    # (2000 x 0.8 + 500 x 6) CNY/M x 0.14 = 4600e-6 x 0.14 = $0.000644 per request
    out = run_json(
        "margin",
        "--price",
        "glm-4.5-air@aliyun",
        "--gpu",
        "h200",
        "--tok-s-per-gpu",
        "100",
        "--usd-per-cny",
        "0.14",
    )
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.000644)


@pytest.fixture
def points_file(tmp_path):
    # the golden points of bench.econ's tests (tests/unit/econ/golden_points.py), with the columns a run writes
    path = tmp_path / "points.parquet"
    golden_points(run_id="r1", dtype="bfloat16", duration_s=10.0, total_tok_s_per_gpu=0.0, ttft_ms_p50=100.0,
                  ttft_ms_p99=300.0, tpot_ms_p50=15.0, tpot_ms_p99=40.0, e2el_ms_p50=1.0,
                  e2el_ms_p99=2.0).to_parquet(path)
    return path


def test_margin_results_per_point_and_best_under_slo(points_file):
    out = run_json(
        "margin",
        "--results",
        str(points_file),
        "--price",
        "glm-4.5-air@zai",
        "--utilization",
        "1",
        "--slo",
        "tpot_ms<=50",
    )
    by = {p["point_id"]: p for p in out["points"]}
    assert set(by) == {"p-low", "p-high"}
    # p-high: golden 0.745614; p-low at half the throughput: 1 - 2 x 0.254386 = 0.491228
    assert by["p-high"]["gross_margin"] == pytest.approx(0.7456140351, rel=1e-9)
    assert by["p-low"]["gross_margin"] == pytest.approx(0.4912280702, rel=1e-9)
    # the SLO (TPOT p90 <= 50 ms) rules out p-high
    assert out["best_under_slo"]["point_id"] == "p-low"
    r = run("margin", "--results", str(points_file), "--price", "glm-4.5-air@zai")
    assert r.exit_code == 0 and "best under SLO (no SLO): p-high" in r.output


def test_margin_results_missing_exit_2(tmp_path):
    bad(["margin", "--results", str(tmp_path / "nothing"), "--price", "glm-4.5-air@zai"], "--results")


# a fleet for 8.64e9 tokens a day on H200s (the golden volume: 50 requests/s at 1500 in / 500 out)
PLAN_FLEET = ["plan", "--tokens-per-day", "8.64e9", "--gpu", "h200"]


def test_plan_golden():
    # 8.64e9 tokens/day at 1500 in / 500 out -> 50 req/s x 0.5 GPU-s = 25 GPUs busy; peak x2 = 50;
    # at most 0.8 busy at peak (default) -> 62.5; replicas of 8 -> 8 x 8 = 64 GPUs x $1.59 (h200
    # owning-neocloud) x 730 h = $74,284.80/month; average utilization 25 / 64 = 0.390625
    out = run_json(
        *PLAN_FLEET,
        "--count",
        "8",
        "--output-tok-s-per-gpu",
        "1000",
        "--input-tokens",
        "1500",
        "--output-tokens",
        "500",
        "--peak-to-average",
        "2",
        "--price",
        "glm-4.5-air@zai",
        "--private-usd-per-year",
        "1000000",
    )
    p = out["plan"]
    assert p["gpus"] == 64 and p["replicas"] == 8 and p["avg_utilization"] == pytest.approx(0.390625)
    assert p["monthly_cost_usd"] == pytest.approx(74284.8)
    assert p["throughput_source"].startswith("given")
    # revenue $3,672/day x 365/12 = $111,690 -> margin 1 - 74,284.8 / 111,690
    assert p["gross_margin"] == pytest.approx(1 - 74284.8 / 111690.0)
    # 64 GPUs x $1.59 x 8760 h = $891,417.60 a year against $1M
    assert out["private_deployment"]["cost_usd_per_year"] == pytest.approx(891417.6)


def test_plan_from_results_uses_best_point_under_slo(points_file):
    out = run_json(
        *PLAN_FLEET,
        "--results",
        str(points_file),
        "--model",
        "glm-4.5-air",
        "--slo",
        "tpot_ms<=50",
    )
    assert out["plan"]["output_tok_s_per_gpu"] == 500.0
    assert "p-low" in out["plan"]["throughput_source"]


@pytest.mark.parametrize(
    "args, needles",
    [
        # neither a throughput nor results nor enough for the analytical estimate
        (["--tokens-per-day", "1e9", "--gpu", "h200"], ["--output-tok-s-per-gpu", "--results"]),
        (
            ["--tokens-per-day", "0", "--gpu", "h200", "--tok-s-per-gpu", "100"],
            ["--tokens-per-day: must be in [1, 1e+15] (got 0)"],  # the bounds table (bench/econ/bounds.py)
        ),
        (
            [
                "--tokens-per-day",
                "1e9",
                "--gpu",
                "h200",
                "--tok-s-per-gpu",
                "100",
                "--peak-to-average",
                "0.5",
            ],
            ["--peak-to-average: must be in [1, 100] (got 0.5)"],
        ),
        (["--tokens-per-day", "1e9", "--gpu", "x9", "--tok-s-per-gpu", "100"], ["unknown GPU 'x9'", "h200"]),
        (
            ["--tokens-per-day", "1e9", "--gpu", "h200", "--tok-s-per-gpu", "100", "--utilization", "1.5"],
            ["utilization must be in (0, 1]"],
        ),
        (
            ["--tokens-per-day", "1e9", "--gpu", "h200", "--tok-s-per-gpu", "100", "--price", "nope@zai"],
            ["unknown model 'nope'"],
        ),
    ],
)
def test_plan_bad_input_exit_2(args, needles):
    bad(["plan", *args], *needles)


def test_plan_results_with_unknown_model_lists_models(points_file):
    bad(
        [
            "plan",
            "--tokens-per-day",
            "1e9",
            "--gpu",
            "h200",
            "--results",
            str(points_file),
            "--model",
            "glm-4.6",
        ],
        "allowed: glm-4.5-air",
    )


PLAN_ESTIMATE = ["plan", "--model", "glm-4.6", "--gpu", "h200", "--count", "8", "--quant", "fp8",
                 "--usd-per-gpu-hour", "2", "--price", "glm-4.6@zai"]


def test_plan_estimate_money_at_the_given_utilization():
    # the estimate's $ and margins use --utilization like `cost` and `margin` (default 0.8 / 2 = 0.4), and
    # every money row says which U. By hand, for each point's estimated T output tok/s per GPU at $2/GPU-h:
    # $/M output = 2 / (T x 3600 x U / 1e6); revenue per GPU-hour grows with U (requests served), so from
    # U = 0.4 to 0.5 it grows x 0.5 / 0.4 = 1.25 while the $2 cost per GPU-hour stays.
    half = run_json(*PLAN_ESTIMATE, "--utilization", "0.5")["estimate"]
    default = run_json(*PLAN_ESTIMATE)["estimate"]
    assert half["utilization"] == 0.5 and default["utilization"] == 0.4
    for r, d in zip(half["curve"], default["curve"], strict=True):
        assert r["utilization"] == 0.5 and d["utilization"] == 0.4
        assert r["usd_per_m_output_tokens"] == pytest.approx(2 / (r["output_tok_s_per_gpu"] * 3600 * 0.5 / 1e6))
        assert r["revenue_usd_per_gpu_hour"] == pytest.approx(d["revenue_usd_per_gpu_hour"] * 1.25)
        assert r["gross_margin"] == pytest.approx(1 - 2 / r["revenue_usd_per_gpu_hour"])
    assert all(t["utilization"] == 0.5 for t in half["cost_by_tier"])
    text = run(*PLAN_ESTIMATE, "--utilization", "0.5").stdout
    assert "at U = 0.5" in text and "at U = 1" not in text
