"""Kernel-efficiency functions by hand, speculative decoding identities, monotonicity, the published-runs
file and the leave-one-out fit (issue 17; planner part of issue 14)."""

import math

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.errors import UserInputError
from bench.planner import fit
from bench.planner.efficiency import Curves, curves_for
from bench.planner.estimate import estimate
from bench.planner.published import load_published_runs
from tests.unit.planner.test_roofline import IDEAL, toy

CURVES = Curves(hbm_gb_s=1000, dense_bw=[(1, 0.5), (16, 0.7)], expert_bw=[(1, 0.4), (4, 0.6)],
                precision_factor={"fp8": 0.8}, attention_bw_max=0.9, attention_latency_us=10.0,
                gemm_max={"bf16": 0.8}, gemm_half_tokens=100)


def test_curves_by_hand():
    # log2 interpolation: 4 tokens is halfway (log2 4 = 2 of 4) between 1 and 16 -> 0.6; flat outside
    assert CURVES.dense_bw_fraction(4, 16) == pytest.approx(0.6)
    assert CURVES.dense_bw_fraction(0.5, 16) == 0.5 and CURVES.dense_bw_fraction(1000, 16) == 0.7
    assert CURVES.expert_bw_fraction(2, 8) == pytest.approx(0.5 * 0.8)  # fp8 factor
    # attention: 2 calls x 10 us + 9e6 B / (1000 GB/s x 0.9) = 20 us + 10 us
    assert CURVES.attention_s(9e6, 1000, 2) == pytest.approx(30e-6)
    # one call of 9e6 B: 9 us at peak over 20 us -> 0.45 of peak
    assert CURVES.attention_fraction(9e6, 1000) == pytest.approx(0.45)
    # GEMM: 0.8 x 300 / (300 + 100) = 0.6
    assert CURVES.gemm_fraction("bf16", 300) == pytest.approx(0.6)


def test_unmeasured_gpu_rule_interpolates_in_log_hbm():
    lo = CURVES
    hi = CURVES.model_copy(update={"hbm_gb_s": 4000, "attention_latency_us": 20.0, "dense_bw": [(1, 0.3)]})
    mid, how = curves_for(2000, {"lo": lo, "hi": hi})  # log(2000/1000) / log(4000/1000) = 0.5
    assert how == "interpolated:lo-hi"
    assert mid.attention_latency_us == pytest.approx(15.0)
    assert mid.dense_bw_fraction(1, 16) == pytest.approx(0.4)
    assert curves_for(500, {"lo": lo, "hi": hi})[1] == "nearest:lo"
    assert curves_for(9000, {"lo": lo, "hi": hi})[1] == "nearest:hi"


def test_measured_curves_reproduce_the_measured_glm45_air_layer_on_h200():
    """shared/reference/gpu-kernels.md: one GLM-4.5-Air MoE layer, BF16, context 2250, B = 1 / 64 / 256:
    0.235 / 1.686 / 2.117 ms measured on the H200. The curves (fitted to the component kernels, not to
    this layer) must land within 25%."""
    est_eff = estimate("glm-4.5-air", "h200", 1, "bf16", 2000, 500, [1])  # to get the configured curves
    from bench.config.catalog import get_model
    from bench.planner.roofline import Deployment, get_gpu, resolve_quant

    curves = est_eff.efficiency  # dict of the Efficiency used
    assert curves["curves_source"] == "measured:h200"
    from bench.planner.roofline import efficiency_for
    eff, _ = efficiency_for("h200", "bf16")
    dep = Deployment(hp=get_model("glm-4.5-air").hp, gpu=get_gpu("h200"), quant=resolve_quant("bf16"), eff=eff)
    layers = dep.hp.num_hidden_layers
    for b, measured_ms in ((1, 0.235), (64, 1.686), (256, 2.117)):
        raw = dep.step_raw(b, 2250)
        lm = dep._lm_head_raw(b)
        per_layer_ms = (raw.memory_s - lm.memory_s) / layers * 1e3
        assert per_layer_ms == pytest.approx(measured_ms, rel=0.25), b


# --- speculative decoding --------------------------------------------------------------------------


def test_spec_k0_equals_no_speculation():
    a = estimate("glm-5", "h200", 8, "fp8", 8000, 1024, [1, 32, 128])
    b = estimate("glm-5", "h200", 8, "fp8", 8000, 1024, [1, 32, 128], spec_tokens=0, acceptance_length=1.0)
    assert a.curve == b.curve


def test_spec_monotone_in_acceptance_length():
    prev = None
    for accept in (1.0, 1.5, 2.0, 3.0, 4.0):
        c = estimate("glm-5", "h200", 8, "fp8", 8000, 1024, [1, 32, 256], spec_tokens=3, acceptance_length=accept)
        tok = [p.output_tok_s for p in c.curve]
        if prev is not None:
            assert all(t >= p for t, p in zip(tok, prev, strict=True))
        prev = tok


def test_spec_case_by_hand():
    # TOY (dense, flat curves, overhead 0), B = 1, context 1000, K = 1:
    # verify step memory = weights 288,040,000 + LM head 20,000,000 + KV 1 x 1001 x 8,000 = 316,048,000 B
    # draft: one of 10 layers of the plain step (316,040,000 - 20,000,000) / 10 = 29,604,000 B + LM head
    # 20,000,000 B -> 49,604,000 B. Step 365,652,000 B -> 365.652 us at 1000 GB/s; L = 2 -> TPOT 182.826 us.
    dep = toy()
    verify = dep.step_raw(1, 1000, spec_tokens=1)
    draft = dep.draft_raw(1, 1000, 1)
    assert verify.memory_s == pytest.approx(316.048e-6, rel=1e-9)
    assert draft.memory_s == pytest.approx(49.604e-6, rel=1e-9)
    from bench.planner.roofline import latencies_s, point_raw
    raw = point_raw(dep, 1000, 2, 1, 10, spec_tokens=1, acceptance_length=2.0)
    # point_raw's context is isl + osl/2 = 1001: KV of 1002 tokens in verify, 1001 in the draft's layer
    tpot = latencies_s(raw, 1.0, 1.0, 0.0).tpot_s
    expected = (288.04e6 + 20e6 + 1002 * 8000 + (288.04e6 + 1001 * 8000) / 10 + 20e6) / 1e12 / 2
    assert tpot == pytest.approx(expected, rel=1e-9)
    assert IDEAL.step_overhead_ms == 0.0


@pytest.mark.parametrize("k,accept", [(-1, 1.0), (3, 5.0), (3, 0.5), (2, float("nan"))])
def test_spec_bad_input_is_one_line_exit_2(k, accept):
    res = CliRunner().invoke(app, ["plan", "--model", "glm-5", "--gpu", "h200", "--count", "8", "--quant", "fp8",
                                   "--spec-tokens", str(k), "--acceptance-length", str(accept)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert ("spec_tokens" in res.output) or ("acceptance_length" in res.output)


# --- monotonicity -----------------------------------------------------------------------------------


def test_more_gpus_never_slower_at_equal_load():
    for c in (4, 32, 128):
        one = estimate("minimax-m2", "h100", 4, "fp8", 2048, 1024, [c], tp=4).curve[0]
        two = estimate("minimax-m2", "h100", 8, "fp8", 2048, 1024, [c], tp=4).curve[0]
        assert two.tpot_ms <= one.tpot_ms and two.output_tok_s >= one.output_tok_s


def test_more_batch_never_lowers_throughput_below_the_knee():
    est = estimate("minimax-m2", "h200", 8, "fp8", 8192, 1024, [1, 2, 4, 8, 16, 32, 64, 128, 256])
    knee = est.memory.max_concurrent_seqs
    below = [p.output_tok_s for p in est.curve if p.concurrency <= knee]
    assert len(below) >= 5 and below == sorted(below)


# --- the published-runs file and the fit --------------------------------------------------------------


def test_published_runs_load_and_derive():
    runs = {r.id: r for r in load_published_runs()}
    r = runs["minimax-m2.5-h100-tp8-c4-8k1k"]
    # 476.5 total tok/s/GPU x 8 GPUs x 1024 / (8192 + 1024) output share = 423.56 output tok/s
    assert r.output_tok_s() == pytest.approx(476.5 * 8 * 1024 / 9216)
    assert runs["glm-5-h200-tp8-mtp3-8k1k-burst32"].spec.draft_tokens() == 3
    assert runs["glm-5.2-h200-dp8-ep8-mtp112-c64-8k1k"].spec.draft_tokens() == 1  # SGLang counts the root


@pytest.mark.parametrize("text,needle", [
    ("runs: 3\n", "runs"),
    ("runs:\n- id: a\n  model: m\n", "runs[0] (a)"),
    ("not: [valid\n", "invalid YAML"),
    ("other: 1\n", "runs"),
])
def test_bad_published_file_is_one_line(tmp_path, text, needle):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(UserInputError) as e:
        load_published_runs(f)
    assert needle in str(e.value) and "\n" not in str(e.value)
    res = CliRunner().invoke(app, ["plan", "--check-published", "--published-file", str(f)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def test_leave_one_out_never_sees_the_point_it_grades(monkeypatch):
    seen: list[tuple[str | None, set[str]]] = []
    real_fit = fit.fit_params

    def spy(pts, prior, exclude=None):
        real_errors = fit._errors

        def errors(train, params):
            seen.append((exclude, {p.run.id for p in train}))
            return real_errors(train, params)
        monkeypatch.setattr(fit, "_errors", errors)
        try:
            return real_fit(pts, prior, exclude)
        finally:
            monkeypatch.setattr(fit, "_errors", real_errors)

    monkeypatch.setattr(fit, "fit_params", spy)
    res = fit.check_published()
    graded = [r["id"] for r in res["rows"] if r.get("fitted_without_it")]
    assert len(graded) >= 5
    for gid in graded:
        trains = [ids for ex, ids in seen if ex == gid]
        assert trains and all(gid not in ids for ids in trains)
    # weight-0 rows never enter any fit
    zero = {r["id"] for r in res["rows"] if r["weight"] == 0}
    assert all(not (zero & ids) for _, ids in seen)


def test_check_published_lists_missing_models_instead_of_crashing(tmp_path):
    text = (load_published_runs.__globals__["PUBLISHED_RUNS"]).read_text().replace("model: minimax-m2\n",
                                                                                 "model: no-such-model\n", 1)
    f = tmp_path / "p.yaml"
    f.write_text(text)
    res = fit.check_published(f)
    row = next(r for r in res["rows"] if r["id"] == "minimax-m2-h100-tp4-c10")
    assert row["status"] == "model not in catalog"
    assert all(math.isfinite(r["ratio_output_tok_s"]) for r in res["rows"] if r.get("fitted_without_it"))


def test_plan_prints_the_error_band_next_to_estimate():
    res = CliRunner().invoke(app, ["plan", "--model", "minimax-m2", "--gpu", "h100", "--count", "4", "--quant",
                                   "fp8", "--concurrency", "8"])
    assert res.exit_code == 0, res.output
    assert "ERROR BAND" in res.output and "leave-one-out" in res.output
