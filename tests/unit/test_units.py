"""bench.units: each helper is exactly the bare expression it replaced (results stay bit-identical)."""

from __future__ import annotations

import pytest

from bench import units as u

VALUES = [0.0, 1.0, 0.1, 2.5, 123.456, 1e-7, 987654321.123, 7, 3]


@pytest.mark.parametrize("x", VALUES)
def test_helpers_equal_the_bare_conversions(x):
    assert u.ms_to_s(x) == x / 1000.0 and u.s_to_ms(x) == x * 1e3
    assert u.ns_to_s(x) == x / 1e9 and u.ns_to_ms(x) == x / 1e6 and u.us_to_s(x) == x * 1e-6
    assert u.s_to_ns(x) == int(x * 1e9) and u.ms_to_ns(x) == int(x * 1e6)
    assert u.from_milli(x) == x / 1000.0 and u.per_million(x) == x / 1e6 and u.in_billions(x) == x / 1e9
    assert u.bytes_to_kib(x) == x / 1024 and u.bytes_to_gib(x) == x / 2**30 and u.bytes_to_gb(x) == x / 1e9
    assert u.gb_s_to_bytes_s(x) == x * 1e9 and u.tflops_to_flops(x) == x * 1e12


def test_constants():
    assert (u.SECONDS_PER_HOUR, u.TOKENS_PER_M, u.HOURS_PER_YEAR, u.HOURS_PER_MONTH) == (3600.0, 1e6, 8760.0, 730.0)
    assert (u.BYTES_PER_GIB, u.BYTES_PER_GB, u.JOULES_PER_KWH) == (2.0**30, 1e9, 3.6e6)
