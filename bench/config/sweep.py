"""Typed configuration: sweep YAML -> pydantic models -> deterministic list of points.

Why pydantic with `extra="forbid"`: a typo in a sweep file (`max_num_seq`) must fail loudly
with the field name and the allowed values, not silently fall back to a default and produce
a benchmark of the wrong thing. `load_sweep` turns every validation problem into a one-line
`UserInputError` naming the file and the field.

A *point* is one measurement. Points that share a `ServerSpec` share one engine start; the
`server_hash` groups them and the `point_id` (hash of the whole resolved point) lets a run be
resumed without re-measuring finished points.

The blocks of a sweep file have modules of their own (engine_spec, server_spec, workload_spec,
load_spec); their models are re-exported here, so `from bench.config.sweep import ServerSpec` works.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from bench.config import speculative
from bench.config.base import StrictModel, format_validation_error, read_yaml, stable_hash
from bench.config.engine_spec import ENGINE_KINDS, EngineSpec
from bench.config.hardware import TCO_TIER, load_hardware
from bench.config.load_spec import LoadMatrix, LoadPoint
from bench.config.server_spec import ServerSpec
from bench.config.slo import Slo
from bench.config.workload_spec import WorkloadSpec, max_request_tokens
from bench.errors import UserInputError

__all__ = [
    "ENGINE_KINDS", "RUN_NAME_PATTERN", "RUN_NAME_RULE", "SERVER_AXES", "EngineSpec", "HardwareRef", "LoadMatrix",
    "LoadPoint", "Point", "ServerSpec", "Sweep", "WorkloadSpec", "check_lengths", "load_sweep", "max_request_tokens",
]

# A run name becomes a directory under --out: no path separators, no leading dot or dash.
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RUN_NAME_RULE = "1-100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


class HardwareRef(StrictModel):
    """Where the sweep runs and what a GPU-hour of it costs (tier from configs/hardware.yaml)."""

    gpu: str = "cpu-2core"
    count: int | None = Field(None, gt=0, description="GPUs per server; default = tensor_parallel_size")
    tier: str = "on-demand"  # a sweep without `tier` prices its hours at on-demand rental
    usd_per_gpu_hour: float | None = Field(None, gt=0, description="overrides the tier price")


SERVER_AXES = tuple(ServerSpec.model_fields)


class Sweep(StrictModel):
    """A sweep file: server axes x load axes x workloads -> points."""

    name: str
    description: str = ""
    engine: SerializeAsAny[EngineSpec] = EngineSpec()  # a kind's registered schema may add fields
    hardware: HardwareRef = HardwareRef()
    server: dict[str, Any] = Field(..., description="ServerSpec fields; a list value is a sweep axis")
    load: LoadMatrix
    workloads: tuple[WorkloadSpec, ...] = (WorkloadSpec(),)
    slo: Slo = Slo()
    zip: tuple[tuple[str, ...], ...] = Field((), description="server axes that vary together, not crossed")
    include: tuple[dict[str, Any], ...] = Field((), description="extra server combinations to add")
    exclude: tuple[dict[str, Any], ...] = Field((), description="server combinations to drop (subset match)")

    @field_validator("server")
    @classmethod
    def _server_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(SERVER_AXES))
        if unknown:
            raise ValueError(f"unknown server field(s) {unknown}; allowed: {', '.join(SERVER_AXES)}")
        if "model" not in v:
            raise ValueError("server.model is required")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RUN_NAME_PATTERN.match(v):
            raise ValueError(f"name must be {RUN_NAME_RULE} (it names the run directory; got {v!r})")
        return v

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, v: Any) -> Any:
        return EngineSpec.for_kind(v)

    @field_validator("workloads", mode="before")
    @classmethod
    def _wl(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _unique(self) -> Sweep:
        """Identical points would overwrite each other's rows (a row is keyed by the point's hash)."""
        names = [w.name for w in self.workloads]
        dup = _first_duplicate(names)
        if dup is not None:
            raise ValueError(f"workloads: the name {dup!r} is used twice; workload names must be unique")
        for axis in ("concurrency", "request_rate"):
            dup = _first_duplicate(getattr(self.load, axis))
            if dup is not None:
                raise ValueError(f"load.{axis}: the value {dup!r} is listed twice (it would measure the same point)")
        zipped = {k for group in self.zip for k in group}
        for group in self.zip:  # a zip group's values repeat per axis; its tuples must not
            cols = [self.server.get(k) for k in group]
            if all(isinstance(c, (list, tuple)) for c in cols):
                dup = _first_duplicate(list(zip(*cols, strict=False)))
                if dup is not None:
                    raise ValueError(f"zip {list(group)}: the combination {list(dup)} is listed twice")
        for k, v in self.server.items():
            if isinstance(v, (list, tuple)):
                if not v:
                    raise ValueError(f"server.{k}: an empty list; give at least one value")
                dup = _first_duplicate(v) if k not in zipped else None
                if dup is not None:
                    raise ValueError(f"server.{k}: the value {dup!r} is listed twice (it would measure the same "
                                     "point)")
        return self

    @model_validator(mode="after")
    def _offline_load(self) -> Sweep:
        if self.engine.capabilities.one_batch_per_point and (self.load.request_rate
                                                             or len(self.load.concurrency) != 1):
            raise ValueError(f"engine.kind {self.engine.kind} submits one batch per point: give load.concurrency as "
                             "one value (a label; max_num_seqs caps what runs at once) and no request_rate")
        return self

    def server_specs(self) -> list[ServerSpec]:
        """Expand server axes: cartesian product, except `zip` groups vary together."""
        axes = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in self.server.items()}
        if "speculative" in axes:  # lists inside one spec expand too (bench.config.speculative.expand)
            axes["speculative"] = speculative.expand(self.server["speculative"])
        zipped: list[tuple[str, ...]] = [tuple(z) for z in self.zip]
        for group in zipped:
            for k in group:
                if k not in axes:
                    raise ValueError(f"zip names {k!r}, which is not a server field in this sweep")
            lengths = {len(axes[k]) for k in group}
            if len(lengths) != 1:
                raise ValueError(f"zip group {list(group)} needs lists of equal length")
        in_zip = {k for g in zipped for k in g}
        factors: list[list[dict[str, Any]]] = []
        for k in axes:  # keep YAML order: deterministic expansion
            if k not in in_zip:
                factors.append([{k: val} for val in axes[k]])
        for group in zipped:
            n = len(axes[group[0]])
            factors.append([{k: axes[k][i] for k in group} for i in range(n)])
        combos: list[dict[str, Any]] = []
        for prod in itertools.product(*factors):
            d: dict[str, Any] = {}
            for part in prod:
                d.update(part)
            combos.append(d)
        combos = [c for c in combos if not any(_matches(c, ex) for ex in self.exclude)]
        base = {k: axes[k][0] for k in axes}
        for inc in self.include:
            unknown = sorted(set(inc) - set(SERVER_AXES))
            if unknown:
                raise ValueError(f"include has unknown server field(s) {unknown}")
            combos.append({**base, **inc})
        specs: list[ServerSpec] = []
        seen: set[str] = set()
        for c in combos:
            spec = _server_spec(c)
            if spec.server_hash not in seen:
                seen.add(spec.server_hash)
                specs.append(spec)
        return specs

    def gpu_count(self, spec: ServerSpec) -> int:
        return self.hardware.count or spec.tensor_parallel_size

    def points(self, specs: list[ServerSpec] | None = None) -> list[Point]:
        """All points, grouped by server spec (server order, then workload, then load); `specs`: the
        server_specs() already expanded (bench.sweep.prepare expands them once per run)."""
        out: list[Point] = []
        for spec in self.server_specs() if specs is None else specs:
            for wl in self.workloads:
                for lp in self.load.points():
                    out.append(Point(server=spec, workload=wl, load=lp, gpu_count=self.gpu_count(spec)))
        return out


def _server_spec(combo: dict[str, Any]) -> ServerSpec:
    """A ServerSpec from one combination; errors name the field as the sweep file does (`server.x`)."""
    try:
        return ServerSpec(**combo)
    except ValidationError as e:
        raise ValueError(format_validation_error("server", e, sep=".", top_level="")) from None


def _first_duplicate(values: Any) -> Any:
    """The first value that appears twice (by equality, so 1 and 1.0 count as one), else None."""
    seen: list[Any] = []
    for v in values:
        if any(v == s and type(v) is not bool and type(s) is not bool for s in seen):
            return v
        seen.append(v)
    return None


def check_lengths(sweep: Sweep, points: list[Point], where: str) -> None:
    """Every request of a point must fit the server's max_model_len, or vLLM answers each with HTTP 400.

    Only for engines we start: an external endpoint's limit is not in the sweep file.
    """
    if sweep.engine.capabilities.needs_base_url:
        return
    for p in points:
        need = max_request_tokens(p.workload)
        if need is not None and need > p.server.max_model_len:
            raise UserInputError(
                f"{where}: workload {p.workload.name!r} needs {need} tokens per request (input + output) but "
                f"server.max_model_len is {p.server.max_model_len}; raise max_model_len or shorten the workload")


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(k in combo and combo[k] == v for k, v in pattern.items())


class Point(StrictModel):
    """One measurement: a server config, a workload and a load pattern."""

    server: ServerSpec
    workload: WorkloadSpec
    load: LoadPoint
    gpu_count: int = 1

    @property
    def point_id(self) -> str:
        return stable_hash(self.model_dump())

    @property
    def server_hash(self) -> str:
        return self.server.server_hash


def load_sweep(path: str | Path) -> Sweep:
    """Load and validate a sweep file, checking the model name against the catalog."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a sweep file must be a YAML mapping")
    try:
        sweep = Sweep(**data)
        points = sweep.points()
    except ValidationError as e:
        raise UserInputError(format_validation_error(path, e, Sweep)) from None
    except ValueError as e:
        raise UserInputError(f"{path}: {e}") from None
    check_lengths(sweep, points, str(path))
    eng = sweep.engine
    if eng.api_key_env and not os.environ.get(eng.api_key_env):
        raise UserInputError(f"{path}: engine.api_key_env: environment variable {eng.api_key_env} is not set "
                             "(export it before the run; the key itself is never written to a file)")
    from bench.config.catalog import check_model_ref

    for spec in {p.server.model for p in points}:
        check_model_ref(spec, where=f"{path}: server.model")
    from bench.config.catalog import load_models

    for model, spec in {(p.server.model, p.server.speculative) for p in points if p.server.speculative}:
        if sweep.engine.capabilities.needs_base_url:
            raise UserInputError(f"{path}: server.speculative: engine.kind {sweep.engine.kind} measures an endpoint "
                                 "that already runs; its speculative decoding is set where it is served")
        speculative.check_draft_model(spec, where=f"{path}: server.speculative.draft_model")
        speculative.check_model_support(spec, load_models().get(model), where=f"{path}: server.speculative.method")
    if sweep.hardware.usd_per_gpu_hour is None:
        try:
            catalog = load_hardware()
            catalog.canonical_tier(sweep.hardware.gpu, sweep.hardware.tier)
            tco = catalog.gpu(sweep.hardware.gpu).tco
            if sweep.hardware.tier == TCO_TIER and tco is not None:
                tco.usd_inputs(catalog.exchange_rates.usd_per_cny)  # CNY inputs need a rate
        except UserInputError as e:
            raise UserInputError(f"{path}: hardware.{e}") from None
    return sweep
