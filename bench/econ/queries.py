"""The questions the money commands ask (cost, margin, plan), answered from objects the caller loaded.

Why a module of its own: this logic used to live in the CLI (the cost-tier loop, the margin-of-measured-
points branch, choosing a throughput for a fleet plan, the 2000/500 traffic mix written three times).
The CLI now only loads configs and results and prints; everything that decides a number is here and
testable without typer. Nothing here reads a file: the hardware catalog, price entry and points table
(a DataFrame from bench.sweep.store.load_results) come in as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.config.slo import Slo
from bench.econ import bounds
from bench.econ import margin as mg
from bench.econ.cost import (
    DEFAULT_UTILIZATION,
    TCO_TIER,
    energy_usd_per_m_tokens,
    require_positive,
    resolve_usd_per_gpu_hour,
    tco_pue,
    usd_per_m_tokens,
)
from bench.econ.pricing import CACHE_WRITE_SOURCE, FxRate, RequestTokens
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
    """The exchange rate: the override when given (within bench.econ.bounds), else the catalog's."""
    if override is not None:
        return bounds.check("usd_per_cny", override, "--usd-per-cny")
    return catalog.exchange_rates.usd_per_cny


def fx_rate(catalog: Any, override: float | None) -> FxRate | None:
    """The exchange rate with its date and source (None when none is configured or given)."""
    if override is not None:
        return FxRate(bounds.check("usd_per_cny", override, "--usd-per-cny"), None,  # type: ignore[arg-type]
                      "given on the command line (--usd-per-cny)")
    ex = catalog.exchange_rates
    if ex.usd_per_cny is None:
        return None
    return FxRate(ex.usd_per_cny, ex.as_of, ex.source or "configs/hardware.yaml exchange_rates", ex.source_date)


def gpu_rate(catalog: Any, gpu: str | None, tier: str | None, usd_per_gpu_hour: float | None,
             fx: float | None, pue: float | None = None) -> tuple[float, str]:
    """$/GPU-hour from an explicit rate, else from `gpu` at `tier` (a rental tier or 'tco', at `pue` when
    given); and its label."""
    if usd_per_gpu_hour is not None:
        return require_positive("usd_per_gpu_hour", usd_per_gpu_hour), "given"
    if gpu is None:
        raise UserInputError("give --gpu (with --tier) or --usd-per-gpu-hour")
    tier = pick_tier(catalog, gpu, tier)[0]
    return resolve_usd_per_gpu_hour(gpu, tier, catalog, fx, pue), f"{gpu}/{tier}"


def cost_rows(catalog: Any, gpu: str | None, tier: str | None, tok_s_per_gpu: float, utilization: float, *,
              usd_per_gpu_hour: float | None = None, joules_per_token: float | None = None,
              usd_per_kwh: float = 0.08, fx: float | None = None, tokens: str = "output",
              pue: float | None = None) -> list[dict[str, Any]]:
    """$/M tokens at one throughput: one row per cost tier of `gpu` (or the one `tier`, or the given rate).

    `tokens` says which tokens `tok_s_per_gpu` counts ("output" or "total" = input + output); the
    columns are named for them (output_tok_s_per_gpu -> usd_per_m_output_tokens, total -> ..._total_tokens).
    A 'tco' row states the PUE it used (`pue` overrides the entry's; bench.econ.cost.tco_pue).
    """
    if tokens not in ("output", "total"):
        raise UserInputError(f"tokens must be one of output, total (got {tokens!r})")
    require_positive(f"{tokens}_tok_s_per_gpu", tok_s_per_gpu)
    bounds.check(f"{tokens}_tok_s_per_gpu", tok_s_per_gpu, f"--{tokens}-tok-s-per-gpu")
    bounds.check("utilization", utilization, "--utilization")
    bounds.check("usd_per_gpu_hour", usd_per_gpu_hour, "--usd-per-gpu-hour")
    bounds.check("joules_per_token", joules_per_token, "--joules-per-token")
    bounds.check("usd_per_kwh", usd_per_kwh, "--usd-per-kwh")
    bounds.check("pue", pue, "--pue")
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
            rates.append((gpu, t, resolve_usd_per_gpu_hour(gpu, t, catalog, fx, pue), src))
    rows = []
    for g, t, rate, src in rates:
        row: dict[str, Any] = {
            "gpu": g, "tier": t, "usd_per_gpu_hour": rate, f"{tokens}_tok_s_per_gpu": tok_s_per_gpu,
            "utilization": utilization,
            f"usd_per_m_{tokens}_tokens": usd_per_m_tokens(tok_s_per_gpu, rate, utilization),
        }
        spec = catalog.gpu(g) if t == TCO_TIER and g != "-" else None
        if spec is not None and spec.tco is not None:
            row["pue"], row["pue_source"] = tco_pue(spec.tco, pue)
        if joules_per_token is not None:
            row[f"energy_usd_per_m_{tokens}_tokens"] = energy_usd_per_m_tokens(
                joules_per_token, usd_per_kwh, pue if pue is not None else 1.0)
        row["source"] = src
        rows.append(row)
    return rows


@dataclass(frozen=True)
class MeasuredMargins:
    """Margin of every measured point, whether each meets the SLO, the best one that does, and each point's
    Offer (point_id -> bench.econ.margin.PointOffer: what --explain walks through)."""

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    offers: dict[str, Any] = field(default_factory=dict)


def margin_of_points(points: Any, entry: Any, utilization: float, slo: Slo, *,
                     input_tokens: float | None = None, output_tokens: float | None = None,
                     cached_share: float = 0.0, cache_write_share: float | None = None,
                     usd_per_gpu_hour: float | None = None, usd_per_cny: float | None = None,
                     requests: dict[str, Any] | None = None) -> MeasuredMargins:
    """`margin --results`: each point at its own measured mix unless a token count is given (the other
    side then defaults from DEFAULT_MIX); the GPU rate is each point's own unless one is given. With
    `requests` (point_id -> per-request table) each measured request is priced at its own tier."""
    fixed_mix = None
    if input_tokens is not None or output_tokens is not None:
        fixed_mix = traffic_mix(input_tokens, output_tokens, cached_share, cache_write_share)
    pos = mg.point_offers(points, entry, utilization, mix=fixed_mix, cached_share=cached_share,
                          cache_write_share=cache_write_share, usd_per_gpu_hour=usd_per_gpu_hour,
                          usd_per_cny=usd_per_cny, requests=requests)
    rows = [mg.point_row(po) for po in pos]
    for r in rows:
        r["meets_slo"] = slo.met_by(r)
    return MeasuredMargins(rows, mg.best_point(rows, slo), {str(po.record.get("point_id")): po for po in pos})


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


def explain_margin(offer: mg.Offer, entry: Any, price_key: str, rate_src: str, target_margin: float,
                   fx: FxRate | None, throughput_label: str) -> list[str]:
    """The arithmetic behind `margin`'s headline figures, one line each, so a finance reader can redo
    it by hand: prices (with the CNY conversion, its date and source), revenue, GPU-seconds, cost, margin,
    break-evens. Every figure is the Offer's own (the one the tables print); the text shows how it is made.
    `throughput_label` says where the throughput came from (given, or estimated from --prefill-fraction)."""
    mix, tok, rate, u = offer.mix, offer.output_tok_s_per_gpu, offer.usd_per_gpu_hour, offer.utilization
    p = offer.prices
    tier = entry.prices_for(mix.input_tokens, mix.output_tokens)
    lines = []
    cur = entry.currency
    conv = f" (CNY x {fx.usd_per_cny:g} USD/CNY, as of {fx.as_of or 'undated'}; {fx.source})" \
        if cur == "CNY" and fx is not None else ""
    bounds_ = [f"input <= {tier.max_input_tokens}" if tier.max_input_tokens else "",
               f"output <= {tier.max_output_tokens}" if tier.max_output_tokens else ""]
    tier_text = f", tier {' and '.join(b for b in bounds_ if b)}" if any(bounds_) else ""
    lines.append(f"price {price_key} ({cur}{tier_text}, source {entry.source_date or 'undated'}): input "
                 f"{tier.input_per_m:g}, cached {_or(tier.cached_input_per_m, tier.input_per_m):g}, "
                 f"cache write {_or(tier.cache_write_per_m, tier.input_per_m):g}, "
                 f"output {tier.output_per_m:g} {cur}/M tokens{conv} = {_usd(p.input_usd_per_m)} / "
                 f"{_usd(p.cached_or_input_usd_per_m)} / {_usd(p.cache_write_or_input_usd_per_m)} / "
                 f"{_usd(p.output_usd_per_m)} per M")
    written = mix.written_input_tokens
    plain = mix.uncached_input_tokens - written
    rev = offer.revenue_usd
    mean_line = (f"1. revenue per request = ({plain:g} input x {_usd(p.input_usd_per_m)} + {written:g} cache-written"
                 f" x {_usd(p.cache_write_or_input_usd_per_m)} + {mix.cached_input_tokens:g} cached x "
                 f"{_usd(p.cached_or_input_usd_per_m)} + {mix.output_tokens:g} output x {_usd(p.output_usd_per_m)})"
                 f" / 1e6 = {_usd(offer.revenue_usd_mean_request)}")
    if offer.requests is None:
        lines.append(mean_line)
    else:
        lines.append(f"1. revenue per request = mean over {len(offer.requests)} requests ({offer.requests.source}),"
                     f" each at its own tier = {_usd(rev)}; the mean request alone: " + mean_line.split(" = ", 1)[1])
    gpu_s = offer.gpu_s_per_request
    lines.append(f"2. GPU-seconds per request = {mix.output_tokens:g} output tokens / {tok:g} output tok/s per GPU "
                 f"= {gpu_s:.6g} GPU-s ({throughput_label})")
    cost = offer.cost_usd()
    lines.append(f"3. cost per request = {gpu_s:.6g} GPU-s x {_usd(rate)}/GPU-hour ({rate_src}) / 3600 s/h / "
                 f"U {u:g} = {_usd(cost)} at U = {u:g}")
    r = mg.api_margin(offer)
    lines.append(f"4. gross margin = 1 - cost / revenue = 1 - {cost:.6g} / {rev:.6g} = {r.gross_margin:.2%}; "
                 f"per request {_usd(r.margin_usd_per_request)}, per M input + output tokens "
                 f"{_usd(r.margin_usd_per_m_tokens)}")
    m = target_margin
    be_u = mg.break_even_utilization(offer, m)
    lines.append(f"5. break-even utilization (margin {m:.0%}) = cost at U = 1 / (revenue x (1 - {m:g})) = "
                 f"{offer.cost_usd(1.0):.6g} / ({rev:.6g} x {1 - m:g}) = {be_u:.2%}")
    bp = mg.break_even_price(offer, m)
    lines.append(f"6. break-even price = list x cost / (revenue x (1 - {m:g})) = list x {bp.scale:.4g}: output "
                 f"{_usd(bp.output_usd_per_m)}/M, input {_usd(bp.input_usd_per_m)}/M (at U = {u:g})")
    be_tok = mg.break_even_tok_s_per_gpu(offer, m)
    lines.append(f"7. break-even throughput = {mix.output_tokens:g} x {rate:.6g} / (3600 x {u:g} x "
                 f"{rev:.6g} x {1 - m:g}) = {be_tok:.6g} output tok/s per GPU")
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


# --- `maas-bench margin`: the one function the command calls ------------------------------------


@dataclass(frozen=True)
class MarginQuery:
    """Every input of `maas-bench margin`, as parsed (None = not given). The command builds one and calls
    `answer_margin`; everything that decides a number happens there."""

    price: str
    utilization: float = DEFAULT_UTILIZATION
    output_tok_s_per_gpu: float | None = None
    total_tok_s_per_gpu: float | None = None
    tok_s_per_gpu: float | None = None  # deprecated: read as output tok/s
    gpu: str | None = None
    tier: str | None = None
    usd_per_gpu_hour: float | None = None
    pue: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    input_sigma: float = 0.0  # what-if: lognormal spread of input lengths (0 = every request the mean)
    output_sigma: float = 0.0
    cached_share: float = 0.0
    cache_write_share: float | None = None
    target_margin: float = 0.0
    price_declines: Sequence[float] = (0.5, 0.8)
    years: int = 1
    hw_decline: float = 0.0
    sensitivity: bool = False
    prefill_fraction: float = 0.0
    curve: bool = False
    slo: Slo = field(default_factory=Slo)
    slo_given: bool = False
    subscription_fee: float | None = None
    fee_currency: str = "USD"
    requests_per_month: float | None = None
    requests_sigma: float = 0.0
    usd_per_cny: float | None = None
    explain: bool = False


@dataclass
class MarginAnswer:
    """What `margin` prints: `out` is the --json object (tables read from it), `notes` go to stderr."""

    mode: str  # "results" or "what-if"
    out: dict[str, Any]
    notes: list[str]


def _check_margin_bounds(q: MarginQuery) -> None:
    bounds.check_all(output_tok_s_per_gpu=q.output_tok_s_per_gpu, total_tok_s_per_gpu=q.total_tok_s_per_gpu,
                     usd_per_gpu_hour=q.usd_per_gpu_hour, utilization=q.utilization, input_tokens=q.input_tokens,
                     output_tokens=q.output_tokens, cached_share=q.cached_share,
                     cache_write_share=q.cache_write_share, target_margin=q.target_margin,
                     price_decline=list(q.price_declines), years=q.years, hw_decline=q.hw_decline,
                     prefill_fraction=q.prefill_fraction, subscription_fee=q.subscription_fee,
                     requests_per_month=q.requests_per_month, requests_sigma=q.requests_sigma,
                     usd_per_cny=q.usd_per_cny, pue=q.pue)
    bounds.check("output_tok_s_per_gpu", q.tok_s_per_gpu, "--tok-s-per-gpu")
    bounds.check("length_sigma", q.input_sigma, "--input-tokens-sigma")
    bounds.check("length_sigma", q.output_sigma, "--output-tokens-sigma")


def _money_context(entry: Any, fx: FxRate | None, mix: mg.TrafficMix | None) -> dict[str, Any]:
    """The exchange rate (where a CNY price becomes USD) and the cache-write assumption, for every output."""
    ctx: dict[str, Any] = {"price_currency": entry.currency}
    if entry.currency == "CNY" and fx is not None:
        ctx["exchange_rate"] = fx.to_dict()
    write = mix.write_share if mix is not None else None
    ctx["cache_write"] = {"share": write, "source": "given (--cache-write-share)" if mix is not None
                          and mix.cache_write_share is not None else CACHE_WRITE_SOURCE}
    return ctx


def answer_margin(q: MarginQuery, catalog: Any, entry: Any, *, points: Any = None,
                  requests: dict[str, Any] | None = None) -> MarginAnswer:
    """`maas-bench margin`: every number of its answer, from one Offer per point (measured: `points`, the run's
    table, and `requests`, point_id -> per-request table) or one Offer (the what-if form)."""
    from bench.config.hardware import convert_to_usd
    from bench.econ import fleet

    _check_margin_bounds(q)
    if q.requests_sigma < 0:
        raise UserInputError(f"--requests-sigma: must be >= 0 (0 = every subscriber sends the median; "
                             f"got {q.requests_sigma:g})")
    fx = fx_rate(catalog, q.usd_per_cny)
    usd_cny = fx.usd_per_cny if fx is not None else None
    tier, tier_note = pick_tier(catalog, q.gpu, q.tier) if q.usd_per_gpu_hour is None else (q.tier, None)
    tok, tok_note = output_tok_s(traffic_mix(q.input_tokens, q.output_tokens, q.cached_share),
                                 output=q.output_tok_s_per_gpu, total=q.total_tok_s_per_gpu,
                                 deprecated=q.tok_s_per_gpu)
    if tok is not None:
        bounds.check("output_tok_s_per_gpu", tok, "output tok/s per GPU (converted from --total-tok-s-per-gpu)")
    notes = [tier_note, tok_note]
    if points is not None:
        if tok is not None:
            raise UserInputError("give either --output-tok-s-per-gpu / --total-tok-s-per-gpu or --results, not both")
        if q.input_sigma or q.output_sigma:
            raise UserInputError("--input-tokens-sigma / --output-tokens-sigma: what-if only; allowed: without "
                                 "--results (measured requests are priced one by one)")
        rate = None if q.usd_per_gpu_hour is None and q.gpu is None else gpu_rate(
            catalog, q.gpu, tier, q.usd_per_gpu_hour, usd_cny, q.pue)[0]
        m = margin_of_points(points, entry, q.utilization, q.slo, input_tokens=q.input_tokens,
                             output_tokens=q.output_tokens, cached_share=q.cached_share,
                             cache_write_share=q.cache_write_share, usd_per_gpu_hour=rate, usd_per_cny=usd_cny,
                             requests=requests)
        write_mix = traffic_mix(None, None, 0.0, q.cache_write_share)
        out = {"price": q.price, "utilization": q.utilization, "slo": str(q.slo),
               **_money_context(entry, fx, write_mix), "points": m.rows, "best_under_slo": m.best}
        if q.explain:
            if m.best is None:
                raise UserInputError("--explain: no point meets the SLO to explain; relax --slo")
            po = m.offers[str(m.best["point_id"])]
            label = (f"throughput MEASURED at point {m.best['point_id']} on its own mix, at its "
                     f"{po.cached_share_source} cache share {po.offer.mix.cached_share:g}")
            src = "given" if rate is not None else f"point {m.best['point_id']}'s rate"
            out["explain"] = {"point_id": m.best["point_id"],
                              "lines": explain_margin(po.offer, entry, q.price, src, q.target_margin, fx, label)}
        return MarginAnswer("results", out, [n for n in notes if n])
    if q.slo_given:
        raise UserInputError("--slo needs --results (a what-if throughput has no latency to check)")
    if tok is None:
        raise UserInputError("give --output-tok-s-per-gpu or --total-tok-s-per-gpu (what-if) or --results "
                             "(measured points)")
    rate, rate_src = gpu_rate(catalog, q.gpu, tier, q.usd_per_gpu_hour, usd_cny, q.pue)
    bounds.check("usd_per_gpu_hour", rate, f"$/GPU-hour of {rate_src}")
    mix = traffic_mix(q.input_tokens, q.output_tokens, q.cached_share, q.cache_write_share)
    given_tok = tok
    tok, cache_source = what_if_cache_throughput(tok, mix.cached_share, q.prefill_fraction)
    reqs = None
    if q.input_sigma or q.output_sigma:
        reqs = RequestTokens.lognormal(mix, q.input_sigma, q.output_sigma)
    offer = mg.Offer(mix, entry, tok, rate, q.utilization, usd_cny, requests=reqs)
    inputs = {
        "price": q.price, "currency": entry.currency, "rate": rate_src, "usd_per_gpu_hour": rate,
        "output_tok_s_per_gpu": tok, "utilization": q.utilization, "input_tokens": mix.input_tokens,
        "cached_share": mix.cached_share, "cached_share_source": cache_source,
        "cache_write_share": mix.write_share, "cache_written_input_tokens": mix.written_input_tokens,
        "output_tokens": mix.output_tokens,
        "revenue_basis": reqs.source + ", each request at its own tier" if reqs is not None else "the mean request",
    }
    if q.total_tok_s_per_gpu is not None:
        inputs["total_tok_s_per_gpu"] = q.total_tok_s_per_gpu
    subscription = None
    if q.subscription_fee is not None or q.requests_per_month is not None:
        if q.subscription_fee is None or q.requests_per_month is None:
            raise UserInputError("a subscription needs both --subscription-fee and --requests-per-month")
        if q.fee_currency not in ("USD", "CNY"):
            raise UserInputError(f"--fee-currency must be one of USD, CNY (got {q.fee_currency!r})")
        fee_usd = convert_to_usd(q.subscription_fee, q.fee_currency, usd_cny, what="--subscription-fee")
        subscription = fleet.SubscriptionQuery(fee_usd, q.requests_per_month, q.requests_sigma)
    out: dict[str, Any] = {
        "inputs": inputs, **_money_context(entry, fx, mix),
        **fleet.what_if(offer, target_margin=q.target_margin, years=q.years, price_declines=q.price_declines,
                        hw_decline=q.hw_decline, sensitivity=q.sensitivity, prefill_fraction=q.prefill_fraction,
                        curve=q.curve, subscription=subscription),
    }
    if reqs is not None:
        out["margin"]["revenue_usd_per_request_mean_request"] = offer.revenue_usd_mean_request
    if q.fee_currency == "CNY" and subscription is not None and fx is not None:
        out["exchange_rate"] = fx.to_dict()
    if q.explain:
        label = (f"throughput ESTIMATED from --prefill-fraction {q.prefill_fraction:g} and cached share "
                 f"{mix.cached_share:g}: {given_tok:g} / (1 - {q.prefill_fraction:g} x {mix.cached_share:g}); not "
                 "measured" if tok != given_tok else "throughput as given; prefill is included when it was "
                 "measured on this mix")
        out["explain"] = explain_margin(offer, entry, q.price, rate_src, q.target_margin, fx, label)
    return MarginAnswer("what-if", out, [n for n in notes if n])
