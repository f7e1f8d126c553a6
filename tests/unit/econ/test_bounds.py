"""bench.econ.bounds: one table, each bound with a reason, one error line naming field and range."""

from __future__ import annotations

import pytest

from bench.econ import bounds
from bench.errors import UserInputError


def test_every_bound_has_a_reason_and_a_sane_interval():
    for row in bounds.table_rows():
        assert len(row["reason"]) > 15, row
    for b in bounds.BOUNDS.values():
        assert b.lo < b.hi


@pytest.mark.parametrize("name, value", [("output_tok_s_per_gpu", 1e308), ("output_tok_s_per_gpu", 1e-300),
                                         ("usd_per_gpu_hour", 1e-320), ("tokens_per_day", 1e300),
                                         ("usd_per_cny", -1.0), ("years", 2.5), ("utilization", float("nan"))])
def test_outside_is_one_line_naming_field_and_range(name, value):
    with pytest.raises(UserInputError) as e:
        bounds.check(name, value, flag=f"--{name}")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--{name}: must be ") and bounds.BOUNDS[name].interval() in msg


def test_inside_and_none_pass():
    assert bounds.check("utilization", 1.0) == 1.0
    assert bounds.check("usd_per_cny", 0.14) == 0.14
    assert bounds.check("years", 3) == 3.0
    assert bounds.check("pue", None) is None
