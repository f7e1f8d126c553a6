"""The money commands (cost, margin, plan) against the inputs issue 16 found getting through: each is one
error line naming the flag, exit 2, no traceback, nothing on stdout; --json is strictly valid JSON;
--explain shows arithmetic a reader can redo (goldens by hand)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from bench.cli.app import app

H100 = ["--gpu", "h100", "--tier", "owning-neocloud"]
M = ["margin", "--price", "glm-4.5-air@zai", *H100]
P = ["plan", "--tokens-per-day", "1e9", "--gpu", "h200"]

# (args, fragment of the one error line)
BAD_INPUTS = [
    (["cost", *H100, "--output-tok-s-per-gpu", "inf"], "--output-tok-s-per-gpu: must be a finite number (got inf)"),
    (["cost", *H100, "--output-tok-s-per-gpu", "nan"], "--output-tok-s-per-gpu: must be a finite number (got nan)"),
    (["cost", *H100, "--tok-s-per-gpu", "inf"], "--tok-s-per-gpu: must be a finite number (got inf)"),
    (["cost", *H100, "--total-tok-s-per-gpu", "-inf"], "--total-tok-s-per-gpu: must be a finite number"),
    (["cost", *H100, "--output-tok-s-per-gpu", "100", "--utilization", "nan"], "--utilization: must be a finite"),
    (["cost", "--usd-per-gpu-hour", "inf", "--output-tok-s-per-gpu", "100"], "--usd-per-gpu-hour: must be a finite"),
    (["cost", *H100, "--output-tok-s-per-gpu", "100", "--joules-per-token", "nan"], "--joules-per-token"),
    (["cost", *H100, "--output-tok-s-per-gpu", "100", "--total-tok-s-per-gpu", "400"], "exactly one of"),
    (["cost", *H100], "exactly one of --output-tok-s-per-gpu or --total-tok-s-per-gpu"),
    ([*M, "--output-tok-s-per-gpu", "nan"], "--output-tok-s-per-gpu: must be a finite number (got nan)"),
    ([*M, "--output-tok-s-per-gpu", "100", "--utilization", "inf"], "--utilization: must be a finite"),
    ([*M, "--output-tok-s-per-gpu", "100", "--input-tokens", "inf"], "--input-tokens: must be a finite"),
    ([*M, "--output-tok-s-per-gpu", "100", "--cached-share", "nan"], "--cached-share: must be a finite"),
    ([*M, "--output-tok-s-per-gpu", "100", "--price-decline", "nan"], "--price-decline: must be a finite"),
    ([*M, "--output-tok-s-per-gpu", "100", "--requests-sigma", "-1"], "--requests-sigma: must be in [0, 5] (got -1)"),
    ([*M, "--output-tok-s-per-gpu", "100", "--requests-sigma", "nan"], "--requests-sigma: must be a finite"),
    ([*M, "--output-tok-s-per-gpu", "100", "--total-tok-s-per-gpu", "400"], "give one of --output-tok-s-per-gpu"),
    ([*M, "--output-tok-s-per-gpu", "100", "--cached-share", "0.5", "--cache-write-share", "0.6"],
     "cache_write_share must be in [0, 1 - cached_share]"),
    ([*M, "--output-tok-s-per-gpu", "100", "--tier", "spot"], "unknown tier 'spot'"),
    (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--isl", "inf"],
     "--isl: must be a finite number (got inf)"),
    (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--isl", "nan"],
     "--isl: must be a finite number (got nan)"),
    (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--osl", "0"],
     "--osl/--output-tokens must be > 0"),
    ([*P, "--output-tok-s-per-gpu", "inf"], "--output-tok-s-per-gpu: must be a finite"),
    ([*P, "--output-tok-s-per-gpu", "100", "--peak-to-average", "nan"], "--peak-to-average: must be a finite"),
    ([*P, "--output-tok-s-per-gpu", "100", "--max-utilization", "inf"], "--max-utilization: must be a finite"),
    (["plan", "--tokens-per-day", "inf", "--gpu", "h200", "--output-tok-s-per-gpu", "100"], "--tokens-per-day"),
    # the model does not fit: say so, do not advise relaxing the SLO
    (["plan", "--model", "glm-4.6", "--gpu", "h100", "--quant", "bf16", "--tokens-per-day", "1e9"],
     "does not fit in h100 memory"),
    # H20 has only 'tco'; a tier named explicitly that it lacks is an error listing its tiers
    (["plan", "--model", "glm-4.6", "--gpu", "h20", "--count", "8", "--quant", "fp8", "--tier", "owning-neocloud",
      "--tokens-per-day", "1e9"], "allowed: tco"),
]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("args, fragment", BAD_INPUTS, ids=[" ".join(a[0][-3:]) for a in BAD_INPUTS])
def test_bad_money_input_is_one_line_exit_2(args, fragment):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    err = _lines(r.stderr)
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], r.stderr
    assert "Traceback" not in r.output and r.stdout.strip() == ""
    assert "relax --slo" not in err[0] or "fit" not in fragment


# every money command's --json form, including ones that carry NaN internally (an estimate that fits
# nothing, a curve with a missing margin)
JSON_COMMANDS = [
    ["cost", "--gpu", "h100", "--output-tok-s-per-gpu", "1000"],
    ["cost", "--gpu", "h20", "--total-tok-s-per-gpu", "1000"],
    [*M, "--output-tok-s-per-gpu", "1000", "--sensitivity", "--curve", "--explain",
     "--subscription-fee", "10", "--requests-per-month", "1000", "--requests-sigma", "1"],
    ["margin", "--price", "glm-4.6@bigmodel", "--gpu", "h200", "--total-tok-s-per-gpu", "5000"],
    ["plan", "--tokens-per-day", "1e9", "--gpu", "h200", "--output-tok-s-per-gpu", "1000", "--price", "glm-4.6@zai"],
    ["plan", "--model", "glm-4.6", "--gpu", "h20", "--quant", "fp8"],
    ["plan", "--model", "glm-4.6", "--gpu", "h100", "--quant", "bf16"],
    ["plan", "--model", "glm-4.6", "--gpu", "h200", "--count", "8", "--quant", "fp8", "--compare"],
]


def _no_nonfinite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_no_nonfinite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nonfinite(v) for v in obj)
    return True


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=[" ".join(a[:4]) for a in JSON_COMMANDS])
def test_json_is_strictly_valid(args):
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output

    def refuse(token: str):
        raise AssertionError(f"non-standard JSON constant {token}")

    obj = json.loads(r.stdout, parse_constant=refuse)  # NaN / Infinity / -Infinity are refused
    assert _no_nonfinite(obj)


def test_print_json_turns_nan_and_inf_into_null(capsys):
    from bench.cli.output import print_json

    print_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": float("-inf")}})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_total_tok_s_is_converted_through_the_mix():
    # InferenceX publishes total tok/s: 5000 total at 2000 in / 500 out = 5000 x 500 / 2500 = 1000 output tok/s
    r = CliRunner().invoke(app, [*M, "--total-tok-s-per-gpu", "5000", "--utilization", "1", "--json"])
    out = json.loads(r.stdout)
    assert out["inputs"]["output_tok_s_per_gpu"] == pytest.approx(1000.0)
    # revenue 2000 x 0.2 + 500 x 1.1 = $0.00095; cost 0.5 GPU-s x 1.55 / 3600 = $0.000215278
    assert out["margin"]["gross_margin"] == pytest.approx(1 - 0.5 * 1.55 / 3600 / 0.00095, rel=1e-9)


def test_margin_default_utilization_is_stated_and_used():
    r = CliRunner().invoke(app, [*M, "--output-tok-s-per-gpu", "1000", "--json"])
    out = json.loads(r.stdout)
    assert out["inputs"]["utilization"] == 0.4
    # cost 0.5 GPU-s x $1.55 / 3600 / 0.4 = $0.000538194; margin 1 - 0.000538194 / 0.00095 = 0.433480
    assert out["margin"]["cost_usd_per_request"] == pytest.approx(0.5 * 1.55 / 3600 / 0.4, rel=1e-12)
    assert out["margin"]["gross_margin"] == pytest.approx(0.4334795322, rel=1e-9)


def test_h20_estimate_and_fleet_use_the_same_stated_rate():
    r = CliRunner().invoke(app, ["plan", "--model", "glm-4.6", "--gpu", "h20", "--count", "8", "--quant", "fp8",
                                 "--tokens-per-day", "1e9", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["plan"]["rate"] == "h20/tco" and out["estimate"]["tier"] == "tco"
    assert out["plan"]["usd_per_gpu_hour"] == out["estimate"]["usd_per_gpu_hour"]
    assert "no 'owning-neocloud' tier; priced at 'tco'" in r.stderr


def test_explain_prints_hand_checkable_arithmetic():
    r = CliRunner().invoke(app, [*M, "--output-tok-s-per-gpu", "1000", "--explain"])
    assert r.exit_code == 0, r.output
    text = r.stdout
    # revenue = (2000 x 0.2 + 500 x 1.1) / 1e6 = $0.00095
    assert "500 output x $1.1) / 1e6 = $0.00095" in text
    # GPU-s = 500 / 1000 = 0.5; cost = 0.5 x 1.55 / 3600 / 0.4 = $0.000538194
    assert "= 0.5 GPU-s" in text and "/ U 0.4 = $0.000538194 at U = 0.4" in text
    # margin 1 - 0.000538194 / 0.00095 = 43.35%; break-even U = 0.000215278 / 0.00095 = 22.66%
    assert "= 43.35%" in text and "= 22.66%" in text
    # break-even throughput = 500 x 1.55 / (3600 x 0.4 x 0.00095) = 566.52 output tok/s
    assert "= 566.52 output tok/s per GPU" in text


def test_explain_shows_cny_conversion_and_the_output_length_tier():
    # glm-4.6@bigmodel, 2000 in / 500 out: output >= 200 -> tier 3 / 0.6 / 14 CNY per M, x 0.14 USD/CNY
    # revenue = (2000 x 0.42 + 500 x 1.96) / 1e6 = $0.00182
    r = CliRunner().invoke(app, ["margin", "--price", "glm-4.6@bigmodel", *H100, "--output-tok-s-per-gpu", "1000",
                                 "--explain", "--json"])
    out = json.loads(r.stdout)
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.00182, rel=1e-12)
    assert any("CNY x 0.14 USD/CNY" in ln and "output <= " not in ln and "input <= 31999" in ln
               for ln in out["explain"])
    # the same request with 150 output tokens is billed at the < 200 tier: 2 / 8 CNY -> $0.28 / $1.12
    r = CliRunner().invoke(app, ["margin", "--price", "glm-4.6@bigmodel", *H100, "--output-tok-s-per-gpu", "1000",
                                 "--output-tokens", "150", "--json"])
    assert json.loads(r.stdout)["margin"]["revenue_usd_per_request"] == pytest.approx(
        (2000 * 0.28 + 150 * 1.12) / 1e6, rel=1e-12)


def test_cache_write_price_is_charged_on_written_tokens():
    # minimax-m2: input 0.30, cache read 0.03, cache write 0.375, output 1.20 (USD per M).
    # 2000 in, half cached, 500 out. Default: NOTHING is billed as a cache write (MiniMax charges writes only
    # for cache_control blocks): revenue = (1000 x 0.30 + 1000 x 0.03 + 500 x 1.20) / 1e6 = $0.00093
    base = ["margin", "--price", "minimax-m2@minimax", *H100, "--output-tok-s-per-gpu", "1000", "--json"]
    out = json.loads(CliRunner().invoke(app, [*base, "--cached-share", "0.5"]).stdout)
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.00093, rel=1e-12)
    assert out["inputs"]["cache_written_input_tokens"] == 0
    assert out["cache_write"]["share"] == 0 and "cache_control" in out["cache_write"]["source"]
    # the written share stated: all 1000 uncached tokens -> (1000 x 0.375 + 1000 x 0.03 + 500 x 1.20) / 1e6
    out = json.loads(CliRunner().invoke(app, [*base, "--cached-share", "0.5", "--cache-write-share", "0.5"]).stdout)
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.001005, rel=1e-12)
    assert out["inputs"]["cache_written_input_tokens"] == 1000
    # no cache hits -> nothing written: 2000 x 0.30 + 500 x 1.20 = $0.0012
    out = json.loads(CliRunner().invoke(app, base).stdout)
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.0012, rel=1e-12)
    # an explicit share: 10% written -> 200 x 0.375 + 800 x 0.30 + 1000 x 0.03 + 500 x 1.2 = $0.000945
    out = json.loads(CliRunner().invoke(app, [*base, "--cached-share", "0.5", "--cache-write-share", "0.1"]).stdout)
    assert out["margin"]["revenue_usd_per_request"] == pytest.approx(0.000945, rel=1e-12)
