"""PUE is a stated input of the TCO model (issue 24, item 6): the entry's own, else a cited default;
`--pue` overrides it and `cost` prints the one it used."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config.hardware import TcoSpec
from bench.econ.cost import DEFAULT_PUE, tco_breakdown, tco_pue


def _spec(**extra):
    return TcoSpec(capex_usd=8760.0, amortization_years=1, kw_all_in=1.0, usd_per_kwh=0.1,
                   hosting_usd_per_gpu_hour=0.0, **extra)


def test_unstated_pue_takes_the_cited_default():
    assert DEFAULT_PUE == 1.56
    pue, src = tco_pue(_spec())
    assert pue == 1.56 and "Uptime" in src
    # energy = 1.0 kW x 1.56 x $0.1/kWh = $0.156/h; capital = 8760 / 8760 h = $1/h
    b = tco_breakdown(_spec())
    assert b.energy_usd_per_gpu_hour == pytest.approx(0.156) and b.usd_per_gpu_hour == pytest.approx(1.156)


def test_stated_and_given_pue():
    assert tco_pue(_spec(pue=1.2)) == (1.2, "configs/hardware.yaml tco entry")
    assert tco_breakdown(_spec(pue=1.2), pue=1.0).energy_usd_per_gpu_hour == pytest.approx(0.1)


def test_cost_states_the_pue_and_takes_an_override():
    r = CliRunner().invoke(app, ["cost", "--gpu", "h20", "--tier", "tco", "--output-tok-s-per-gpu", "1000", "--json"])
    base = json.loads(r.stdout)[0]
    assert base["pue"] == 1.2 and base["pue_source"] == "configs/hardware.yaml tco entry"
    r = CliRunner().invoke(app, ["cost", "--gpu", "h20", "--tier", "tco", "--output-tok-s-per-gpu", "1000",
                                 "--pue", "1.5", "--json"])
    row = json.loads(r.stdout)[0]
    # h20 energy: kw_all_in 0.5 x PUE x $/kWh; raising PUE 1.2 -> 1.5 adds 0.5 x 0.3 x $/kWh per hour
    assert row["pue"] == 1.5 and row["usd_per_gpu_hour"] > base["usd_per_gpu_hour"]
