"""bench.config.slo: the one SLO syntax. Expected values are written out by hand from the syntax."""

from __future__ import annotations

import math

import pytest

from bench.config.slo import SLO_PERCENTILES, Slo, SloTerm, parse_slo
from bench.config.sweep import Sweep
from bench.errors import UserInputError


def test_terms_default_to_p90_and_keep_an_explicit_percentile():
    s = parse_slo("ttft_ms<=2000, tpot_ms_p99<=50")
    assert s.terms == (SloTerm(metric="ttft_ms", percentile="p90", limit_ms=2000.0),
                       SloTerm(metric="tpot_ms", percentile="p99", limit_ms=50.0))
    assert s.name is None and str(s) == "ttft_ms<=2000,tpot_ms_p99<=50"


def test_name_label_and_mean():
    s = parse_slo("interactive:ttft_ms_mean<=500,e2el_ms_p95<=9000")
    assert s.name == "interactive" and s.label == "interactive"
    assert [t.column for t in s.terms] == ["ttft_ms_mean", "e2el_ms_p95"]
    assert s.describe() == "interactive: TTFT mean <= 500 ms, E2EL p95 <= 9000 ms"


def test_met_by_is_inclusive_and_missing_or_nan_fails():
    s = parse_slo("ttft_ms_p99<=2000,tpot_ms<=50")
    assert s.met_by({"ttft_ms_p99": 2000.0, "tpot_ms_p90": 50.0})
    assert not s.met_by({"ttft_ms_p99": 2000.01, "tpot_ms_p90": 1.0})
    assert not s.met_by({"ttft_ms_p99": 1.0, "tpot_ms_p90": math.nan})
    assert not s.met_by({"ttft_ms_p99": 1.0})
    assert Slo().met_by({})  # no terms: no constraint
    # an explicit p50 reads the _p50 column, not the default p90 one
    p50 = parse_slo("tpot_ms_p50<=50")
    assert p50.met_by({"tpot_ms_p50": 50.0}) and not p50.met_by({"tpot_ms_p50": 50.5, "tpot_ms_p90": 1.0})


@pytest.mark.parametrize("text, fragment", [
    ("ttft<=5", "unknown metric 'ttft'"),
    ("ttft_ms_p42<=5", "unknown percentile 'p42'"),
    ("latency_p99<=5", "unknown metric 'latency'"),
    ("ttft_ms<5", "cannot parse 'ttft_ms<5'"),
    ("ttft_ms_p99=2000", "cannot parse 'ttft_ms_p99=2000'"),
    ("ttft_ms<=inf", "finite number > 0"),
    ("ttft_ms<=nan", "finite number > 0"),
    ("ttft_ms<=0", "finite number > 0"),
    ("ttft_ms<=-3", "finite number > 0"),
    ("ttft_ms<=abc", "not a number"),
    (":ttft_ms<=5", "empty name"),
    ("ttft_ms<=5,", "give terms"),
    ("", "give terms"),
])
def test_bad_input_is_one_line_naming_the_part(text, fragment):
    with pytest.raises(UserInputError) as e:
        parse_slo(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    if "unknown" in fragment:
        assert "ttft_ms, tpot_ms, itl_ms, e2el_ms" in str(e.value) and ", ".join(SLO_PERCENTILES) in str(e.value)


def _sweep(slo):
    return Sweep.model_validate({"name": "x", "server": {"model": "glm-4.5-tiny"}, "load": {"concurrency": [1]},
                                 "slo": slo})


def test_sweep_takes_the_string_and_the_old_mapping_the_same_way():
    old = _sweep({"ttft_ms": 2000, "tpot_ms": 100})
    new = _sweep("ttft_ms<=2000,tpot_ms<=100")
    assert old.slo == new.slo
    assert (old.slo.ttft_ms, old.slo.tpot_ms, old.slo.e2el_ms) == (2000.0, 100.0, None)
    # dumps to the old mapping so a run dir written before the change compares equal on resume
    assert new.model_dump(mode="json")["slo"] == {"ttft_ms": 2000.0, "tpot_ms": 100.0, "e2el_ms": None}
    assert _sweep(None).model_dump(mode="json")["slo"] == {"ttft_ms": None, "tpot_ms": None, "e2el_ms": None}
    # a form the mapping cannot say dumps as the string, and reloads to the same SLO
    p99 = _sweep("ttft_ms_p99<=2000")
    assert p99.model_dump(mode="json")["slo"] == "ttft_ms_p99<=2000"
    assert _sweep(p99.model_dump(mode="json")["slo"]).slo == p99.slo


def test_goodput_and_planner_limits():
    s = parse_slo("ttft_ms_p99<=2000,e2el_ms<=9000")
    assert s.request_limits() == {"ttft_ms": 2000.0, "e2el_ms": 9000.0}
    assert s.point_limits() == {"ttft_ms": 2000.0, "e2el_ms": 9000.0}  # e2el is honoured, not dropped
    with pytest.raises(UserInputError, match="itl_ms"):
        parse_slo("itl_ms<=5").point_limits()
    with pytest.raises(UserInputError, match="itl_ms"):
        parse_slo("itl_ms<=5").request_limits()
