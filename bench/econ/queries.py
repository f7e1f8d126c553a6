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


def traffic_mix(input_tokens: float | None, output_tokens: float | None, cached_share: float = 0.0,
                cache_write_share: float | None = None) -> mg.TrafficMix:
    """The mix with each missing side taken from DEFAULT_MIX."""
    return mg.TrafficMix(
        input_tokens if input_tokens is not None else DEFAULT_MIX.input_tokens,
        output_tokens if output_tokens is not None else DEFAULT_MIX.output_tokens,
        cached_share,
        cache_write_share,
    )


DEPRECATED_TOK_S_NOTE = ("--tok-s-per-gpu is deprecated and read as OUTPUT tok/s per GPU; say which tokens: "
                         "--output-tok-s-per-gpu, or --total-tok-s-per-gpu (input + output, as InferenceX publishes)")


def output_tok_s(mix: mg.TrafficMix, *, output: float | None, total: float | None,
                 deprecated: float | None = None) -> tuple[float | None, str | None]:
    """Output tok/s per GPU from whichever flag was given (None if none), and a note.

    Total tok/s counts input + output tokens; on a mix of I input and O output tokens per request the
    GPU produces O / (I + O) of them as output: output = total x O / (I + O). (At 2000/500 reading a
    total figure as output overstates throughput 5x, hence one flag per kind of token.)
    """
    given = [(n, v) for n, v in (("--output-tok-s-per-gpu", output), ("--total-tok-s-per-gpu", total),
                                 ("--tok-s-per-gpu", deprecated)) if v is not None]
    if len(given) > 1:
        names = ", ".join(n for n, _ in given)
        raise UserInputError(f"give one of --output-tok-s-per-gpu or --total-tok-s-per-gpu (got {names})")
    if not given:
        return None, None
    name, v = given[0]
    require_positive(name.lstrip("-").replace("-", "_"), v)
    if name == "--total-tok-s-per-gpu":
        out = v * mix.output_tokens / mix.total_tokens
        return out, (f"output tok/s = total {v:g} x {mix.output_tokens:g} / ({mix.input_tokens:g} + "
                     f"{mix.output_tokens:g}) = {out:.6g}")
    return v, DEPRECATED_TOK_S_NOTE if name == "--tok-s-per-gpu" else None


def pick_tier(catalog: Any, gpu: str | None, tier: str | None) -> tuple[str | None, str | None]:
    """The tier to price `gpu` at (a deprecated name mapped to its new one) and a note when it is not
    the one asked for: no --tier -> the default tier, or the GPU's first one if it lacks it. Every
    caller (estimate, fleet sizing, margin) prices the same hour with it."""
    if gpu is None:
        return tier, None
    if tier is None:
        return catalog.default_tier(gpu)
    return catalog.canonical_tier(gpu, tier), None


def usd_per_cny(catalog: Any, override: float | None) -> float | None:
    """The exchange rate: the override when given (must be > 0), else the catalog's."""
    if override is not None:
        return require_positive("usd_per_cny", override)
    return catalog.exchange_rates.usd_per_cny


def gpu_rate(catalog: Any, gpu: str | None, tier: str | None, usd_per_gpu_hour: float | None,
             fx: float | None) -> tuple[float, str]:
    """$/GPU-hour from an explicit rate, else from `gpu` at `tier` (a rental tier or 'tco'); and its label."""
    if usd_per_gpu_hour is not None:
        return require_positive("usd_per_gpu_hour", usd_per_gpu_hour), "given"
    if gpu is None:
        raise UserInputError("give --gpu (with --tier) or --usd-per-gpu-hour")
    tier = pick_tier(catalog, gpu, tier)[0]
    return resolve_usd_per_gpu_hour(gpu, tier, catalog, fx), f"{gpu}/{tier}"


def cost_rows(catalog: Any, gpu: str | None, tier: str | None, tok_s_per_gpu: float, utilization: float, *,
              usd_per_gpu_hour: float | None = None, joules_per_token: float | None = None,
              usd_per_kwh: float = 0.08, fx: float | None = None, tokens: str = "output") -> list[dict[str, Any]]:
    """$/M tokens at one throughput: one row per cost tier of `gpu` (or the one `tier`, or the given rate).

    `tokens` says which tokens `tok_s_per_gpu` counts ("output" or "total" = input + output); the
    columns are named for them (output_tok_s_per_gpu -> usd_per_m_output_tokens, total -> ..._total_tokens).
    """
    if tokens not in ("output", "total"):
        raise UserInputError(f"tokens must be one of output, total (got {tokens!r})")
    require_positive(f"{tokens}_tok_s_per_gpu", tok_s_per_gpu)
    if usd_per_gpu_hour is not None:
        rates = [(gpu or "-", "given", gpu_rate(catalog, gpu, "", usd_per_gpu_hour, fx)[0], "--usd-per-gpu-hour")]
    else:
        if gpu is None:
            raise UserInputError(f"give --gpu ({', '.join(catalog.gpus)}) or --usd-per-gpu-hour")
        spec = catalog.gpu(gpu)
        tiers = [catalog.canonical_tier(gpu, tier)] if tier is not None else spec.cost_tiers()
        if not tiers:
            raise UserInputError(f"gpu {gpu!r} has no cost tiers; give --usd-per-gpu-hour")
        rates = []
        for t in tiers:
            src = spec.tiers[t].source if t in spec.tiers else (spec.tco.source if spec.tco else "")
            rates.append((gpu, t, resolve_usd_per_gpu_hour(gpu, t, catalog, fx), src))
    rows = []
    for g, t, rate, src in rates:
        row: dict[str, Any] = {
            "gpu": g, "tier": t, "usd_per_gpu_hour": rate, f"{tokens}_tok_s_per_gpu": tok_s_per_gpu,
            "utilization": utilization,
            f"usd_per_m_{tokens}_tokens": usd_per_m_tokens(tok_s_per_gpu, rate, utilization),
        }
        if joules_per_token is not None:
            row[f"energy_usd_per_m_{tokens}_tokens"] = energy_usd_per_m_tokens(joules_per_token, usd_per_kwh)
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
    if not rows:
        raise UserInputError("--results: no ok point with output tok/s per GPU > 0; "
                             "allowed: a run with measured points")
    if not feasible:
        raise UserInputError(f"--results: no ok point meets the SLO ({slo.describe()}); relax --slo")
    return max(feasible, key=lambda r: r["output_tok_s_per_gpu"])


def _usd(v: float) -> str:
    return f"${v:.6g}"


def _or(v: float | None, default: float) -> float:
    return default if v is None else v


def explain_margin(mix: mg.TrafficMix, entry: Any, price_key: str, tok: float, rate: float, rate_src: str,
                   utilization: float, target_margin: float, fx: float | None) -> list[str]:
    """The arithmetic behind `margin`'s headline figures, one line each, so a finance reader can redo
    it by hand: prices (with the CNY conversion), revenue, GPU-seconds, cost, margin, break-evens.
    Every number is recomputed here from the inputs with the formulas of bench.econ.margin, and
    checked against them, so the text cannot drift from the figures the table shows."""
    p = mg.usd_prices(entry, mix, fx)
    tier = entry.prices_for(mix.input_tokens, mix.output_tokens)
    lines = []
    cur = entry.currency
    conv = f" (CNY x {fx:g} USD/CNY)" if cur == "CNY" else ""
    bounds = [f"input <= {tier.max_input_tokens}" if tier.max_input_tokens else "",
              f"output <= {tier.max_output_tokens}" if tier.max_output_tokens else ""]
    tier_text = f", tier {' and '.join(b for b in bounds if b)}" if any(bounds) else ""
    lines.append(f"price {price_key} ({cur}{tier_text}, source {entry.source_date or 'undated'}): input "
                 f"{tier.input_per_m:g}, cached {_or(tier.cached_input_per_m, tier.input_per_m):g}, "
                 f"cache write {_or(tier.cache_write_per_m, tier.input_per_m):g}, "
                 f"output {tier.output_per_m:g} {cur}/M tokens{conv} = {_usd(p.input_usd_per_m)} / "
                 f"{_usd(p.cached_or_input_usd_per_m)} / {_usd(p.cache_write_or_input_usd_per_m)} / "
                 f"{_usd(p.output_usd_per_m)} per M")
    written = mix.written_input_tokens
    plain = mix.uncached_input_tokens - written
    rev = (plain * p.input_usd_per_m + written * p.cache_write_or_input_usd_per_m
           + mix.cached_input_tokens * p.cached_or_input_usd_per_m + mix.output_tokens * p.output_usd_per_m) / 1e6
    lines.append(
        f"1. revenue per request = ({plain:g} input x {_usd(p.input_usd_per_m)} + {written:g} cache-written x "
        f"{_usd(p.cache_write_or_input_usd_per_m)} + {mix.cached_input_tokens:g} cached x "
        f"{_usd(p.cached_or_input_usd_per_m)} + {mix.output_tokens:g} output x {_usd(p.output_usd_per_m)}) / 1e6 "
        f"= {_usd(rev)}")
    gpu_s = mix.output_tokens / tok
    lines.append(f"2. GPU-seconds per request = {mix.output_tokens:g} output tokens / {tok:g} output tok/s per GPU "
                 f"= {gpu_s:.6g} GPU-s (prefill included: the throughput was measured on this mix)")
    cost = gpu_s * rate / 3600 / utilization
    lines.append(f"3. cost per request = {gpu_s:.6g} GPU-s x {_usd(rate)}/GPU-hour ({rate_src}) / 3600 s/h / "
                 f"U {utilization:g} = {_usd(cost)} at U = {utilization:g}")
    margin = 1 - cost / rev
    lines.append(f"4. gross margin = 1 - cost / revenue = 1 - {cost:.6g} / {rev:.6g} = {margin:.2%}; "
                 f"per request {_usd(rev - cost)}, per M input + output tokens "
                 f"{_usd((rev - cost) / mix.total_tokens * 1e6)}")
    m = target_margin
    be_u = cost * utilization / (rev * (1 - m))
    lines.append(f"5. break-even utilization (margin {m:.0%}) = cost at U = 1 / (revenue x (1 - {m:g})) = "
                 f"{cost * utilization:.6g} / ({rev:.6g} x {1 - m:g}) = {be_u:.2%}")
    k = cost / (rev * (1 - m))
    lines.append(f"6. break-even price = list x cost / (revenue x (1 - {m:g})) = list x {k:.4g}: output "
                 f"{_usd(p.output_usd_per_m * k)}/M, input {_usd(p.input_usd_per_m * k)}/M (at U = {utilization:g})")
    be_tok = mix.output_tokens * rate / (3600 * utilization * rev * (1 - m))
    lines.append(f"7. break-even throughput = {mix.output_tokens:g} x {rate:.6g} / (3600 x {utilization:g} x "
                 f"{rev:.6g} x {1 - m:g}) = {be_tok:.6g} output tok/s per GPU")
    check = mg.api_margin(mg.Offer(mix, entry, tok, rate, utilization, fx))
    if abs(check.gross_margin - margin) > 1e-9 or abs(check.revenue_usd_per_request - rev) > 1e-12:
        raise AssertionError("explain_margin disagrees with bench.econ.margin.api_margin")
    return lines


def what_if_cache_throughput(output_tok_s_per_gpu: float, cached_share: float,
                             prefill_fraction: float) -> tuple[float, str]:
    """The what-if throughput at a given cache-hit share, and a label saying how it was obtained.

    With no measurement the cache can reach the cost side only as an estimate: given the share of a
    request's GPU time spent in prefill without cache (`--prefill-fraction` f), the given no-cache
    throughput is scaled as if the prefill shrank to (1 - share) (bench.econ.cache.prefill_scaled_tok_s).
    Without f the throughput is left as given and only revenue counts the cache (the label says so).
    """
    from bench.econ import cache

    if cached_share <= 0:
        return output_tok_s_per_gpu, cache.NONE
    if prefill_fraction <= 0:
        return output_tok_s_per_gpu, (f"given share {cached_share:g}: revenue only (throughput as given; "
                                      "pass --prefill-fraction for an estimate, or measure with --results)")
    tok = cache.prefill_scaled_tok_s(output_tok_s_per_gpu, cached_share, prefill_fraction)
    return tok, (f"ESTIMATE: given share {cached_share:g}, prefill fraction {prefill_fraction:g}: "
                 f"throughput {output_tok_s_per_gpu:g} / (1 - {prefill_fraction:g} x {cached_share:g}) = {tok:.6g}")
