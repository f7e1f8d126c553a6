"""What the sweep needs priced, declared here and implemented in bench.econ (`bench.econ.row_cost.ROW_PRICING`).

Why a callback: the sweep layer measures and must compute no economics, yet a row carries the
$/GPU-hour of its hardware and the first cost columns. The caller (the CLI) passes a `Pricing`;
without one (`UNPRICED`) a row keeps an explicit `hardware.usd_per_gpu_hour` and its cost columns
are None.
"""

from __future__ import annotations

from typing import Any, Protocol

from bench.config.sweep import Sweep

COST_COLUMNS = ("usd_per_m_output", "usd_per_m_total")


class Pricing(Protocol):
    def usd_per_gpu_hour(self, sweep: Sweep) -> float | None:
        """$/GPU-hour of the sweep's hardware; raises UserInputError for an unknown GPU or tier."""

    def cost_columns(self, row: dict[str, Any]) -> dict[str, float | None]:
        """The cost columns (COST_COLUMNS) of a measured row (it has usd_per_gpu_hour and throughputs)."""


class Unpriced:
    """No price book: only an explicit hardware.usd_per_gpu_hour, and no cost columns."""

    def usd_per_gpu_hour(self, sweep: Sweep) -> float | None:
        return sweep.hardware.usd_per_gpu_hour

    def cost_columns(self, row: dict[str, Any]) -> dict[str, float | None]:
        return dict.fromkeys(COST_COLUMNS)


UNPRICED = Unpriced()
