"""The questions the money commands ask (cost, margin, plan), answered from objects the caller loaded.

Why a module of its own: this logic used to live in the CLI (the cost-tier loop, the margin-of-measured-
points branch, choosing a throughput for a fleet plan, the 2000/500 traffic mix written three times).
The CLI now only loads configs and results and prints; everything that decides a number is here and
testable without typer. Nothing here reads a file: the hardware catalog, price entry and points table
(a DataFrame from bench.sweep.store.load_results) come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.config.slo import Slo
from bench.econ import margin as mg
from bench.econ.cost import energy_usd_per_m_tokens, require_positive, resolve_usd_per_gpu_hour, usd_per_m_tokens
from bench.errors import UserInputError

# The traffic mix assumed when none is given: a chat-like request with 2000 input tokens and 500
# output tokens, no cache hits. One constant so margin, plan and their help texts agree.
DEFAULT_INPUT_TOKENS = 2000.0
DEFAULT_OUTPUT_TOKENS = 500.0
DEFAULT_MIX = mg.TrafficMix(DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, 0.0)


def traffic_mix(input_tokens: float | None, output_tokens: float | None, cached_share: float = 0.0) -> mg.TrafficMix:
    """The mix with each missing side taken from DEFAULT_MIX."""
    return mg.TrafficMix(
        input_tokens if input_tokens is not None else DEFAULT_MIX.input_tokens,
        output_tokens if output_tokens is not None else DEFAULT_MIX.output_tokens,
        cached_share,
    )


def usd_per_cny(catalog: Any, override: float | None) -> float | None:
    """The exchange rate: the override when given (must be > 0), else the catalog's."""
    if override is not None:
        return require_positive("usd_per_cny", override)
    return catalog.exchange_rates.usd_per_cny


def gpu_rate(catalog: Any, gpu: str | None, tier: str, usd_per_gpu_hour: float | None,
             fx: float | None) -> tuple[float, str]:
    """$/GPU-hour from an explicit rate, else from `gpu` at `tier` (a rental tier or 'tco'); and its label."""
    if usd_per_gpu_hour is not None:
        return require_positive("usd_per_gpu_hour", usd_per_gpu_hour), "given"
    if gpu is None:
        raise UserInputError("give --gpu (with --tier) or --usd-per-gpu-hour")
    return resolve_usd_per_gpu_hour(gpu, tier, catalog, fx), f"{gpu}/{tier}"


def cost_rows(catalog: Any, gpu: str | None, tier: str | None, tok_s_per_gpu: float, utilization: float, *,
              usd_per_gpu_hour: float | None = None, joules_per_token: float | None = None,
              usd_per_kwh: float = 0.08, fx: float | None = None) -> list[dict[str, Any]]:
    """$/M tokens at one throughput: one row per cost tier of `gpu` (or the one `tier`, or the given rate)."""
    if usd_per_gpu_hour is not None:
        rates = [(gpu or "-", "given", gpu_rate(catalog, gpu, "", usd_per_gpu_hour, fx)[0], "--usd-per-gpu-hour")]
    else:
        if gpu is None:
            raise UserInputError(f"give --gpu ({', '.join(catalog.gpus)}) or --usd-per-gpu-hour")
        spec = catalog.gpu(gpu)
        tiers = [tier] if tier is not None else spec.cost_tiers()
        if not tiers:
            raise UserInputError(f"gpu {gpu!r} has no cost tiers; give --usd-per-gpu-hour")
        rates = []
        for t in tiers:
            src = spec.tiers[t].source if t in spec.tiers else (spec.tco.source if spec.tco else "")
            rates.append((gpu, t, resolve_usd_per_gpu_hour(gpu, t, catalog, fx), src))
    rows = []
    for g, t, rate, src in rates:
        row: dict[str, Any] = {
            "gpu": g, "tier": t, "usd_per_gpu_hour": rate, "tok_s_per_gpu": tok_s_per_gpu,
            "utilization": utilization, "usd_per_m_tokens": usd_per_m_tokens(tok_s_per_gpu, rate, utilization),
        }
        if joules_per_token is not None:
            row["energy_usd_per_m_tokens"] = energy_usd_per_m_tokens(joules_per_token, usd_per_kwh)
        row["source"] = src
        rows.append(row)
    return rows


@dataclass(frozen=True)
class MeasuredMargins:
    """Margin of every measured point, whether each meets the SLO, and the best one that does."""

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None


def margin_of_points(points: Any, entry: Any, utilization: float, slo: Slo, *,
                     input_tokens: float | None = None, output_tokens: float | None = None,
                     cached_share: float = 0.0, usd_per_gpu_hour: float | None = None,
                     usd_per_cny: float | None = None) -> MeasuredMargins:
    """`margin --results`: each point at its own measured mix unless a token count is given (the other
    side then defaults from DEFAULT_MIX); the GPU rate is each point's own unless one is given."""
    fixed_mix = None
    if input_tokens is not None or output_tokens is not None:
        fixed_mix = traffic_mix(input_tokens, output_tokens, cached_share)
    rows = mg.margin_per_point(points, entry, utilization, mix=fixed_mix, cached_share=cached_share,
                               usd_per_gpu_hour=usd_per_gpu_hour, usd_per_cny=usd_per_cny)
    for r in rows:
        r["meets_slo"] = slo.met_by(r)
    return MeasuredMargins(rows, mg.best_point(rows, slo))


def measured_throughput(points: Any, slo: Slo, *, model: str | None = None, gpu: str | None = None,
                        quant: str | None = None) -> dict[str, Any]:
    """The ok point with the highest output tok/s per GPU that meets `slo`, among those matching the
    given model / GPU / quantization (a filter naming a value the run lacks is an error listing what it has)."""
    rows = [
        r for r in points.to_dict("records")
        if r.get("status", "ok") == "ok"
        and isinstance(r.get("output_tok_s_per_gpu"), (int, float)) and r["output_tok_s_per_gpu"] > 0
    ]
    for col, want in (("model", model), ("gpu_type", gpu), ("quantization", quant)):
        if want is None or not rows or col not in rows[0]:
            continue
        have = sorted({str(r.get(col)) for r in rows})
        if want not in have:
            raise UserInputError(f"--results has no ok point with {col} {want!r}; allowed: {', '.join(have)}")
        rows = [r for r in rows if str(r.get(col)) == want]
    feasible = [r for r in rows if slo.met_by(r)]
    if not feasible:
        raise UserInputError(f"--results: no ok point meets the SLO ({slo.describe()}); relax --slo")
    return max(feasible, key=lambda r: r["output_tok_s_per_gpu"])
