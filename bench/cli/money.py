"""Commands that answer money questions without a GPU: cost, margin, plan, calibrate.

Why this module: bench.cli.app registers the money commands from here; each lives in a module of its
own (cost_cmd, margin_cmd, plan_cmd with calibrate) and their shared flags and checks in money_options.
SLOs use the one syntax of bench.config.slo (`--slo 'ttft_ms<=2000,tpot_ms_p99<=50'`, default
percentile p90).
"""

from __future__ import annotations

from bench.cli.cost_cmd import cost
from bench.cli.margin_cmd import margin
from bench.cli.plan_cmd import calibrate, plan

__all__ = ["calibrate", "cost", "margin", "plan"]
