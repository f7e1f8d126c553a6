"""What the money commands (cost, margin, plan) share: option help texts, input checks, notes, loading points.

Why a module of its own: the commands live in cost_cmd, margin_cmd and plan_cmd (bench.cli.money
gathers them for the app); their common flags must read the same and fail the same way (one line,
exit 2). Argument plumbing only: no number is decided here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cli.output import say
from bench.econ.cost import (
    DEFAULT_MAX_UTILIZATION_AT_PEAK,
    DEFAULT_PEAK_TO_AVERAGE,
    DEFAULT_PUE_SOURCE,
    DEFAULT_UTILIZATION,
)
from bench.errors import UserInputError

SLO_HELP = "SLO 'metric[_pNN]<=ms,...' (metrics ttft_ms, tpot_ms, itl_ms, e2el_ms; default p90), e.g. 'tpot_ms<=50'."
TIER_HELP = ("Cost tier from configs/hardware.yaml: owning-hyperscaler, owning-neocloud (InferenceX owning costs), "
             "rental-3yr, on-demand*, capacity-block, or tco (our owned-hardware model). Default: owning-neocloud, "
             "else the GPU's first tier (said). Old names hyperscaler/neocloud/reserved are deprecated aliases.")
U_HELP = (f"Fleet utilization in (0, 1]: share of hours the GPUs run at the given throughput; cost x 1/U. "
          f"Default {DEFAULT_UTILIZATION:g} (= {DEFAULT_MAX_UTILIZATION_AT_PEAK:g} at peak / peak-to-average "
          f"{DEFAULT_PEAK_TO_AVERAGE:g}, bench.econ.cost); 1 = best case.")
OUT_TOK_HELP = "Output tokens/s per GPU (generated tokens only)."
TOTAL_TOK_HELP = "Total (input + output) tokens/s per GPU, as InferenceX publishes; converted through the mix."
PUE_HELP = ("Power usage effectiveness for the 'tco' tier (facility / IT power; the TCO kW figure is chip plus "
            "host share before PUE). Default: the hardware entry's own, else " + DEFAULT_PUE_SOURCE + ".")
OLD_TOK_HELP = "Deprecated: read as --output-tok-s-per-gpu."
# table cells holding a fraction that a finance reader reads as a percentage
PERCENT_KEYS = ("gross_margin", "margin_at_low", "margin_at_high", "base_margin", "target_margin",
                "share_served_at_loss", "avg_utilization", "break_even_utilization", "cached_share")


def require_finite(**flags: Any) -> None:
    """Every numeric flag must be a finite number: inf/nan is one error line naming the flag (exit 2)."""
    import math

    for name, v in flags.items():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, float) and not math.isfinite(x):
                raise UserInputError(f"--{name.replace('_', '-')}: must be a finite number (got {x})")


def pct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a table: margin-like fractions as percentages ("43.3%"); JSON keeps the fractions."""
    return [{k: (f"{v:.1%}" if k in PERCENT_KEYS and isinstance(v, float) else v) for k, v in r.items()}
            for r in rows]


def print_notes(*extra: str | None) -> None:
    """Print deprecation and defaulting notes on stderr (stdout stays clean for --json)."""
    from bench.config.hardware import PENDING_NOTES

    for n in [*PENDING_NOTES, *extra]:
        if n:
            say(n, err=True, prefix="note: ")
    PENDING_NOTES.clear()


def slo_option(text: str | None) -> Any:
    from bench.config.slo import Slo, parse_slo

    return parse_slo(text) if text else Slo()


def load_points(results: Path) -> Any:
    """Points table of a run dir (bench.sweep.store.load_results), or of a parquet file."""
    from bench.sweep.store import load_results

    try:
        return load_results(results)
    except UserInputError as e:
        raise UserInputError(f"--results: {e}") from None


def load_requests(results: Path, points: Any) -> dict[str, Any]:
    """Per-request tables of a run's points (point_id -> DataFrame, bench.sweep.store.load_requests), for
    pricing each request at its own tier; points without a readable file are left out (priced on the mean)."""
    from bench.sweep.store import REQUESTS_DIR
    from bench.sweep.store import load_requests as load

    out: dict[str, Any] = {}
    if not Path(results).is_dir() or points is None or "point_id" not in points:
        return out
    for pid in points["point_id"].dropna().astype(str):
        if (Path(results) / REQUESTS_DIR / f"{pid}.parquet").is_file():
            try:
                out[pid] = load(results, pid)
            except (OSError, ValueError):
                continue
    return out
