"""THE latency SLO: one type and one syntax for sweeps, tune, report, margin and plan.

Syntax: `[name:]metric[_stat]<=value[,metric[_stat]<=value...]`, e.g.
`ttft_ms<=2000,tpot_ms_p99<=50` or `interactive:ttft_ms<=500,tpot_ms<=30`.

- metric: one of SLO_METRICS (latencies in ms, as the points table names them).
- stat: one of SLO_PERCENTILES; `mean` is accepted too because every latency column has a `_mean`
  twin and tune always allowed it. Without a suffix a term means DEFAULT_PERCENTILE (p90), the
  percentile the margin/plan/report commands always defaulted to.
- value: a finite number > 0 (ms). Only `<=` exists: an SLO is a ceiling on latency.
- name: an optional label (report tiers); it changes nothing about what is met.

Why one module: four parsers used to accept four syntaxes, each example string was accepted by
exactly one of them. Every consumer now reads an `Slo`:

- aggregate rows (tune, report, margin, plan --results): `Slo.met_by(row)` checks each term's
  column (`ttft_ms_p90` ...); a missing or NaN value cannot prove the SLO is met;
- per-request goodput (sweep `slo:`): a request has one TTFT/TPOT/E2EL, so the percentile does not
  apply there; `request_limits()` gives the per-metric limits (itl_ms is rejected: a request has
  many ITL samples and goodput never defined which one counts);
- the analytical planner: it has no distribution, only one value per metric, so it reads every term
  as a limit on its point estimate (`point_limits()`) and the plan output says so.

The sweep YAML `slo:` key also takes the old mapping `{ttft_ms: 2000, tpot_ms: 100, e2el_ms: ...}`
(terms at the default percentile, exactly what the old code did) and dumps back to it when it can,
so run directories written before the change load and resume without a spurious "config changed".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from bench.errors import UserInputError

SLO_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")
SLO_PERCENTILES = ("p50", "p90", "p95", "p99", "mean")
DEFAULT_PERCENTILE = "p90"
# metrics one request has exactly one value of (per-request goodput), and the old mapping's keys
REQUEST_METRICS = ("ttft_ms", "tpot_ms", "e2el_ms")
POINT_ESTIMATE_NOTE = ("the roofline estimate has no latency distribution: every SLO term is checked "
                       "against its point estimate, whatever the percentile")

_TERM = re.compile(r"^([a-z0-9_]+?)(?:_(p\d+|mean))?\s*<=\s*(\S+)$")
_SYNTAX = "metric[_pNN]<=value, e.g. ttft_ms<=2000,tpot_ms_p99<=50"


def _allowed() -> str:
    return f"metrics {', '.join(SLO_METRICS)}; percentiles {', '.join(SLO_PERCENTILES)} (default {DEFAULT_PERCENTILE})"


class SloTerm(BaseModel):
    """One ceiling: the points-table column `{metric}_{percentile}` must be <= limit_ms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    percentile: str = DEFAULT_PERCENTILE
    limit_ms: float

    @property
    def column(self) -> str:
        return f"{self.metric}_{self.percentile}"

    def met_by(self, row: Mapping[str, Any]) -> bool:
        v = row.get(self.column)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False  # an unmeasured metric cannot prove the SLO is met
        return float(v) <= self.limit_ms

    def __str__(self) -> str:
        suffix = "" if self.percentile == DEFAULT_PERCENTILE else f"_{self.percentile}"
        return f"{self.metric}{suffix}<={self.limit_ms:g}"


class Slo(BaseModel):
    """A named (or unnamed) set of latency ceilings; no terms = no constraint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terms: tuple[SloTerm, ...] = ()
    name: str | None = None

    # --- construction -----------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        """Accept the string syntax and the old `{ttft_ms: .., tpot_ms: .., e2el_ms: ..}` mapping."""
        if v is None:
            return {}
        if isinstance(v, str):
            s = parse_slo(v, what="slo")
            return {"terms": s.terms, "name": s.name}
        if isinstance(v, Mapping) and "terms" not in v and "name" not in v:
            unknown = sorted(set(v) - set(REQUEST_METRICS))
            if unknown:
                raise ValueError(f"unknown field {', '.join(map(str, unknown))}; allowed: "
                                 f"{', '.join(REQUEST_METRICS)}, or a string like {_SYNTAX}")
            terms = []
            for metric in REQUEST_METRICS:
                limit = v.get(metric)
                if limit is None:
                    continue
                terms.append(SloTerm(metric=metric, limit_ms=_limit("slo", metric, limit)))
            return {"terms": tuple(terms)}
        return v

    @model_serializer(mode="plain")
    def _dump(self) -> Any:
        """The old mapping when it says the same thing (old run dirs compare equal), else the string."""
        metrics = [t.metric for t in self.terms]
        if (self.name is None and len(set(metrics)) == len(metrics)
                and all(t.metric in REQUEST_METRICS and t.percentile == DEFAULT_PERCENTILE for t in self.terms)):
            return {m: self.limit(m) for m in REQUEST_METRICS}
        return str(self)

    # --- reading ------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __str__(self) -> str:
        body = ",".join(str(t) for t in self.terms)
        return f"{self.name}:{body}" if self.name else body

    @property
    def label(self) -> str:
        """The name, else the terms: what a report row or a table calls this SLO."""
        return self.name or (str(self) or "no latency limit")

    def describe(self) -> str:
        """Human text, every percentile spelled out: 'interactive: TTFT p90 <= 500 ms, TPOT p90 <= 30 ms'."""
        parts = [f"{t.metric.removesuffix('_ms').upper()} {t.percentile} <= {t.limit_ms:g} ms" for t in self.terms]
        body = ", ".join(parts) if parts else "no latency limit"
        return f"{self.name}: {body}" if self.name else body

    def limit(self, metric: str) -> float | None:
        """The tightest limit on `metric` at any percentile (None = not constrained)."""
        lims = [t.limit_ms for t in self.terms if t.metric == metric]
        return min(lims) if lims else None

    def percentile_of(self, metric: str) -> str:
        """The percentile this SLO reads `metric` at (the default when it has no term for it)."""
        return next((t.percentile for t in self.terms if t.metric == metric), DEFAULT_PERCENTILE)

    # the per-metric limits, as the points table's slo_* columns record them
    @property
    def ttft_ms(self) -> float | None:
        return self.limit("ttft_ms")

    @property
    def tpot_ms(self) -> float | None:
        return self.limit("tpot_ms")

    @property
    def e2el_ms(self) -> float | None:
        return self.limit("e2el_ms")

    def met_by(self, row: Mapping[str, Any]) -> bool:
        """An aggregate row (one point) meets the SLO when every term's column is within its limit."""
        return all(t.met_by(row) for t in self.terms)

    def request_limits(self) -> dict[str, float]:
        """Per-request limits for goodput; itl_ms has no single per-request value, so it is refused."""
        if any(t.metric == "itl_ms" for t in self.terms):
            raise UserInputError("slo: itl_ms cannot be checked per request (goodput); use "
                                 f"{', '.join(REQUEST_METRICS)}")
        return {m: v for m in REQUEST_METRICS if (v := self.limit(m)) is not None}

    def point_limits(self, supported: tuple[str, ...] = REQUEST_METRICS) -> dict[str, float]:
        """Limits for a model with one value per metric (the planner); unsupported metrics are refused."""
        bad = sorted({t.metric for t in self.terms} - set(supported))
        if bad:
            raise UserInputError(f"--slo: the estimate has no {', '.join(bad)}; allowed: {', '.join(supported)}")
        return {m: v for m in supported if (v := self.limit(m)) is not None}


def _limit(what: str, part: str, raw: Any) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise UserInputError(f"{what}: {part}: limit {raw!r} is not a number; expected {_SYNTAX}") from None
    if not math.isfinite(v) or v <= 0:
        raise UserInputError(f"{what}: {part}: limit must be a finite number > 0 ms (got {raw!r})")
    return v


def parse_slo(text: str, what: str = "--slo") -> Slo:
    """Parse `[name:]metric[_pNN]<=value,...`; any bad part -> a one-line UserInputError naming it."""
    text = (text or "").strip()
    name, sep, body = text.partition(":")
    if not sep:
        name, body = "", text
    name = name.strip()
    if sep and not name:
        raise UserInputError(f"{what}: empty name before ':' in {text!r}; expected [name:]{_SYNTAX}")
    parts = [p.strip() for p in body.split(",")]
    if not body.strip() or any(not p for p in parts):
        raise UserInputError(f"{what}: give terms like {_SYNTAX} (got {text!r})")
    terms: list[SloTerm] = []
    for p in parts:
        m = _TERM.match(p)
        if not m:
            raise UserInputError(f"{what}: cannot parse {p!r}; expected {_SYNTAX}; {_allowed()}")
        metric, pct, raw = m.group(1), m.group(2) or DEFAULT_PERCENTILE, m.group(3)
        if metric not in SLO_METRICS:
            raise UserInputError(f"{what}: unknown metric {metric!r} in {p!r}; {_allowed()}")
        if pct not in SLO_PERCENTILES:
            raise UserInputError(f"{what}: unknown percentile {pct!r} in {p!r}; {_allowed()}")
        terms.append(SloTerm(metric=metric, percentile=pct, limit_ms=_limit(what, p, raw)))
    return Slo(terms=tuple(terms), name=name or None)
