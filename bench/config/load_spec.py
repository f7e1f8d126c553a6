"""`load:` of a sweep file: the arrival patterns a point is measured under.

Why its own module: the load generator (bench.measure.loadgen) reads only a `LoadPoint`, and
`LoadMatrix` expands the sweep file's load lists into them. Re-exported by bench.config.sweep.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_serializer, model_validator

from bench.config.base import StrictModel


class UntilSpec(StrictModel):
    """`load.until`: keep measuring a point in rounds until its throughput interval is tight enough.

    A point is one window of requests on a noisy machine; its output tok/s carries a 95% interval
    (bench.measure.intervals, batch means). With `until`, the measured phase runs `num_requests`
    requests (one round), and while the interval's relative width (hi - lo) / output_tok_s is above
    `throughput_rel_ci` another round of `num_requests` follows in the same continuous stream (no
    gap, no new warm-up), until `max_requests` measured requests have been sent. The check is made
    when a round's last measured request has finished, on every request finished by then.
    """

    throughput_rel_ci: float = Field(gt=0, le=2, description="target (hi - lo) / output_tok_s of the 95% interval")
    max_requests: int = Field(gt=0, description="cap on measured requests over all rounds")


def _drop_no_until(d: Any) -> Any:
    """A load without `until` dumps as it did before the field existed: point ids (the resume key) keep."""
    if isinstance(d, dict) and d.get("until", 0) is None:
        d.pop("until")
    return d


class LoadPoint(StrictModel):
    """One arrival pattern: closed-loop `concurrency`, or open-loop `request_rate` (req/s)."""

    concurrency: int | None = Field(None, gt=0)
    request_rate: float | None = Field(None, gt=0)
    burstiness: float = Field(1.0, gt=0, description="gamma shape; 1.0 = Poisson")
    num_requests: int = Field(32, gt=0)
    warmup_requests: int = Field(0, ge=0)
    duration_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    max_concurrency: int | None = Field(None, gt=0, description="cap on in-flight requests for rate mode")
    ramp_s: float | None = Field(None, gt=0, description="ramp-up seconds (requests sent during it are warm-up)")
    ramp_start_rate: float | None = Field(None, ge=0, description="rate mode: req/s at the start of the ramp")
    cooldown: bool = Field(True, description="keep the load on (unmeasured) until the last measured request ends")
    until: UntilSpec | None = Field(None, description="measure in rounds until the throughput interval is tight")

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return _drop_no_until(handler(self))

    @property
    def effective_warmup(self) -> int:
        """Warm-up requests actually sent: in closed loop at least one full wave (the concurrency).

        The stream is continuous, so with fewer warm-up requests than workers the first measured
        requests start in the same wave as the warm-up, on a server that has not yet seen a batch
        that large (on vLLM's CPU build the first such batch can stall the whole wave for ~1 s).
        `warmup_requests: 0` still means no warm-up at all.
        """
        if self.warmup_requests and self.concurrency:
            return max(self.warmup_requests, self.concurrency)
        return self.warmup_requests

    @model_validator(mode="after")
    def _one_mode(self) -> LoadPoint:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency or request_rate")
        if self.ramp_start_rate is not None and (self.request_rate is None or self.ramp_s is None):
            raise ValueError("ramp_start_rate needs request_rate and ramp_s")
        _check_until(self.until, self.num_requests, self.duration_s)
        return self


def _check_until(until: UntilSpec | None, num_requests: int, duration_s: float | None) -> None:
    if until is None:
        return
    if duration_s is not None:
        raise ValueError("until measures in rounds of num_requests: give it without duration_s")
    if until.max_requests < num_requests:
        raise ValueError(f"until.max_requests ({until.max_requests}) is below num_requests ({num_requests}), "
                         "the first round")


class LoadMatrix(StrictModel):
    """Load axes of a sweep. Lists expand; each concurrency and each rate is one point."""

    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    burstiness: float = Field(1.0, gt=0)
    num_requests: int = Field(32, gt=0)
    warmup_requests: int = Field(2, ge=0)
    duration_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    max_concurrency: int | None = Field(None, gt=0)
    ramp_s: float | None = Field(None, gt=0)
    ramp_start_rate: float | None = Field(None, ge=0)
    cooldown: bool = True
    until: UntilSpec | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return _drop_no_until(handler(self))

    @field_validator("concurrency", mode="before")
    @classmethod
    def _conc(cls, v: Any) -> Any:
        v = v if isinstance(v, (list, tuple)) else [v]  # one value, of any type (`1.0` was a TypeError)
        for c in v:
            if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
                raise ValueError(f"concurrency values must be positive integers (got {c!r})")
        return v

    @field_validator("request_rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        v = v if isinstance(v, (list, tuple)) else [v]
        for r in v:
            if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) or r <= 0:
                raise ValueError(f"request_rate values must be positive numbers in req/s (got {r!r})")
        return v

    @model_validator(mode="after")
    def _some(self) -> LoadMatrix:
        if not self.concurrency and not self.request_rate:
            raise ValueError("give at least one concurrency or request_rate")
        if self.ramp_start_rate is not None and self.ramp_s is None:
            raise ValueError("ramp_start_rate needs ramp_s")
        _check_until(self.until, self.num_requests, self.duration_s)
        return self

    def points(self) -> list[LoadPoint]:
        common = self.model_dump(exclude={"concurrency", "request_rate"})
        closed = {**common, "ramp_start_rate": None}  # a start rate only means something in rate mode
        out = [LoadPoint(concurrency=c, **closed) for c in self.concurrency]
        out += [LoadPoint(request_rate=r, **common) for r in self.request_rate]
        return out
