"""The money columns of a measured row, priced here because the sweep layer measures and never prices.

The CLI hands `ROW_PRICING` to bench.sweep (`prepare`, `run_sweep`, `run_tune`): the sweep asks it
once for the $/GPU-hour of the sweep's hardware (written into every row as `usd_per_gpu_hour`) and,
for each measured row, for the first cost columns ($/M output and $/M total tokens at the point's
measured throughput). bench.sweep declares what it needs (`bench.sweep.pricing.Pricing`) and
imports no econ module.
"""

from __future__ import annotations

from typing import Any

from bench.config.hardware import load_hardware
from bench.config.sweep import Sweep
from bench.econ.cost import resolve_usd_per_gpu_hour, usd_per_m_tokens


def hardware_rate(sweep: Sweep) -> float:
    """$/GPU-hour for the sweep's hardware: explicit override, else the named tier."""
    if sweep.hardware.usd_per_gpu_hour is not None:
        return sweep.hardware.usd_per_gpu_hour
    return resolve_usd_per_gpu_hour(sweep.hardware.gpu, sweep.hardware.tier, load_hardware())


def cost_columns(row: dict[str, Any]) -> dict[str, float | None]:
    """First cost columns: $/M output and $/M total tokens at the point's measured throughput."""
    rate = row.get("usd_per_gpu_hour")
    out: dict[str, float | None] = {"usd_per_m_output": None, "usd_per_m_total": None}
    if not rate:
        return out
    if row.get("output_tok_s_per_gpu"):
        out["usd_per_m_output"] = usd_per_m_tokens(row["output_tok_s_per_gpu"], rate)
    if row.get("total_tok_s_per_gpu"):
        out["usd_per_m_total"] = usd_per_m_tokens(row["total_tok_s_per_gpu"], rate)
    return out


class RowPricing:
    """bench.sweep.pricing.Pricing at the hardware tiers of configs/hardware.yaml (or the sweep's override)."""

    def usd_per_gpu_hour(self, sweep: Sweep) -> float:
        return hardware_rate(sweep)

    def cost_columns(self, row: dict[str, Any]) -> dict[str, float | None]:
        return cost_columns(row)


ROW_PRICING = RowPricing()
