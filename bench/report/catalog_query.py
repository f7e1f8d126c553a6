"""SQL over the catalog: a read-only DuckDB `points` view with the cost and margin columns at a chosen
hardware tier, utilization U and price.

Why the money columns come from Python: every money figure has one definition, bench.econ.margin's
`Offer` (`point_offers` / `point_row`, the same rows `margin --results` and the report print); SQL
must not re-derive it. They are a DuckDB Python function of each point's offer inputs (OFFER_INPUTS), so
a query pays for them only on the rows it keeps: DuckDB applies a WHERE on plain columns before the
function, and a query that never names a money column never calls it.

Why the lock-down: `query` runs SQL a user typed over files on disk. The database is in memory; only
one statement, of type SELECT (a WITH ... SELECT is one), is accepted; after the views are made,
external access (files, ATTACH, extensions) is switched off and the configuration is locked, so a
SELECT cannot read or write a file, or turn access back on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from bench.econ.cost import DEFAULT_UTILIZATION
from bench.errors import UserInputError
from bench.report.catalog import Catalog

# (name, arrow type): the money columns of the `points` view, named as bench.econ.margin.point_row names
# them, plus the price and tier they were priced at
MONEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("price_key", pa.string()),
    ("priced_tier", pa.string()),
    ("utilization", pa.float64()),
    ("cost_usd_per_gpu_hour", pa.float64()),
    ("cost_usd_per_request", pa.float64()),
    ("cost_usd_per_m_output_tokens", pa.float64()),
    ("cost_usd_per_m_tokens", pa.float64()),
    ("revenue_usd_per_request", pa.float64()),
    ("revenue_usd_per_m_tokens", pa.float64()),
    ("revenue_usd_per_gpu_hour", pa.float64()),
    ("gross_margin", pa.float64()),
    ("margin_usd_per_m_tokens", pa.float64()),
    ("break_even_utilization", pa.float64()),
    ("cached_share", pa.float64()),
    ("cached_share_source", pa.string()),
    ("revenue_basis", pa.string()),
)
MONEY_NAMES = tuple(n for n, _ in MONEY_COLUMNS)
# the columns bench.econ.margin.point_offers reads to price a point
OFFER_INPUTS = ("status", "point_id", "run_id", "model", "gpu_type", "output_tok_s_per_gpu", "usd_per_gpu_hour",
                "completed", "input_tokens", "output_tokens", "cached_input_frac")
RUN_OWN_TIER = "run"  # priced_tier when no --tier was given: each run's own $/GPU-hour


@dataclass
class CatalogPricing:
    """How the money columns are priced: every point at `utilization`; at hardware `tier` for its GPU (None:
    the run's own $/GPU-hour, column usd_per_gpu_hour); at price-book entry `price` for every model (None:
    each model's own entry, or its tiny twin's real model's, as the report chooses: report.data)."""

    utilization: float = DEFAULT_UTILIZATION
    tier: str | None = None
    price: str | None = None
    usd_per_cny: float | None = None
    notes: list[str] = field(default_factory=list)
    _rates: dict[str, float | None] = field(default_factory=dict)
    _prices: dict[str, Any] = field(default_factory=dict)
    _configs: dict[str, Any] = field(default_factory=dict)
    _ready: bool = False

    def check(self) -> CatalogPricing:
        """Validate the flags once (one line, exit 2 on a bad one); configs are loaded only when needed."""
        from bench.econ import bounds

        if self._ready:
            return self
        bounds.check("utilization", self.utilization, "--utilization")
        bounds.check("usd_per_cny", self.usd_per_cny, "--usd-per-cny")
        if self.tier is not None:
            from bench.config.hardware import DEPRECATED_TIER_ALIASES

            known = sorted({t for g in self._config("hardware").gpus.values() for t in g.cost_tiers()})
            if self.tier not in known and DEPRECATED_TIER_ALIASES.get(self.tier) not in known:
                raise UserInputError(f"--tier: unknown tier {self.tier!r}; allowed: {', '.join(known)}")
        if self.price is not None:
            self._config("prices").get(self.price)  # an unknown entry is one line naming the allowed ones
        self._ready = True
        return self

    def _config(self, name: str) -> Any:
        """configs/hardware.yaml or prices.yaml, loaded once (YAML parsing is most of a small query's time)."""
        if name not in self._configs:
            from bench.config.hardware import load_hardware
            from bench.config.prices import load_price_book

            self._configs[name] = load_hardware() if name == "hardware" else load_price_book()
        return self._configs[name]

    def fx_for(self, entry: Any) -> float | None:
        """The exchange rate for a CNY price entry (the flag, else configs/hardware.yaml); None for USD."""
        if entry is None or getattr(entry, "currency", "USD") != "CNY":
            return None
        if "fx" not in self._configs:
            from bench.econ.queries import fx_rate

            rate = fx_rate(self._config("hardware"), self.usd_per_cny)
            self._configs["fx"] = rate.usd_per_cny if rate is not None else None
        return self._configs["fx"]

    def rate(self, gpu: Any) -> float | None:
        """$/GPU-hour of `gpu` at the tier (None: the GPU or the tier is not in the hardware catalog)."""
        from bench.econ.cost import resolve_usd_per_gpu_hour

        key = str(gpu)
        if key not in self._rates:
            try:
                self._rates[key] = resolve_usd_per_gpu_hour(key, self.tier, self._config("hardware"),  # type: ignore
                                                            self.usd_per_cny)
            except (UserInputError, KeyError, ValueError):
                self._rates[key] = None
                self.notes.append(f"no {self.tier!r} tier for gpu {key!r}: its points have no money columns")
        return self._rates[key]

    def resolve_models(self, models: Sequence[Any]) -> None:
        """Choose the price of every model at once (one read of the model catalog)."""
        from bench.report.data import resolve_prices

        todo = sorted({str(m) for m in models} - set(self._prices))
        if todo:
            self._prices.update(resolve_prices(todo, self.price, self._config("prices")))

    def price_for(self, model: Any) -> tuple[str | None, Any]:
        """(price key, price entry) of `model`, chosen as the report chooses (report.data.resolve_prices)."""
        self.resolve_models([model])
        choice = self._prices[str(model)]
        return (choice.key, choice.entry) if choice.entry is not None else (None, None)


def money_rows(records: Sequence[dict[str, Any]], pricing: CatalogPricing) -> list[dict[str, Any] | None]:
    """The money columns of each record (OFFER_INPUTS), None where the point cannot be priced (failed, no
    throughput, no token counts, no rate at the tier). Every figure is bench.econ.margin.point_row of the
    point's one Offer (point_offers), priced in groups of one model and GPU."""
    from bench.econ import margin as mg

    pricing.check()
    pricing.resolve_models({str(r.get("model")) for r in records if r.get("status") == "ok"})
    out: list[dict[str, Any] | None] = [None] * len(records)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        if r.get("status") == "ok":
            groups.setdefault((str(r.get("model")), str(r.get("gpu_type"))), []).append(i)
    for (model, gpu), idx in groups.items():
        rate = None
        if pricing.tier is not None:
            rate = pricing.rate(gpu)
            if rate is None:
                continue
        key, entry = pricing.price_for(model)
        frame = _Records([{**records[i], "_row": i} for i in idx])
        try:
            priced = _priced(mg, frame, entry, pricing, rate)
        except UserInputError:  # one unpriceable point (zero revenue ...) must not hide the group: one by one
            priced = []
            for i in idx:
                try:
                    priced += _priced(mg, _Records([{**records[i], "_row": i}]), entry, pricing, rate)
                except UserInputError:
                    continue
        for i, row in priced:
            row.update(price_key=key, priced_tier=pricing.tier or RUN_OWN_TIER)
            out[i] = {n: row.get(n) for n in MONEY_NAMES}
    return out


class _Records(list):
    """Records where point_offers reads a DataFrame (it only asks for `to_dict("records")`): building a
    DataFrame per small batch of rows was most of a filtered query's time."""

    def to_dict(self, orient: str) -> list[dict[str, Any]]:
        assert orient == "records"
        return list(self)


def _priced(mg: Any, frame: Any, entry: Any, pricing: CatalogPricing,
            rate: float | None) -> list[tuple[int, dict[str, Any]]]:
    pos = mg.point_offers(frame, entry, pricing.utilization, usd_per_gpu_hour=rate, usd_per_cny=pricing.fx_for(entry))
    return [(int(po.record["_row"]), mg.point_row(po)) for po in pos]


# --- the SQL surface --------------------------------------------------------------------------


def check_read_only(sql: str) -> None:
    """Accept exactly one SELECT statement (WITH ... SELECT included); anything else is one line, exit 2."""
    import duckdb

    text = (sql or "").strip()
    if not text:
        raise UserInputError("query: empty SQL; give one SELECT (or WITH ... SELECT) over the `points` view")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as e:
        raise UserInputError(f"query: {_first_line(e)}") from None
    if len(statements) != 1:
        raise UserInputError(f"query: give exactly one statement (got {len(statements)}); only a read-only "
                             "SELECT or WITH ... SELECT is run")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise UserInputError(f"query: only a read-only SELECT or WITH ... SELECT is run (got a "
                             f"{str(kind).rsplit('.', 1)[-1]} statement)")


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")[0].split())[:300]


def open_points(catalog: Catalog, pricing: CatalogPricing) -> Any:
    """An in-memory DuckDB connection with the view `points` (every catalog column, then the money
    columns), external access off (but for the catalog's own index files) and the configuration locked."""
    import duckdb

    pricing.check()
    names = list(OFFER_INPUTS)

    def money(a: pa.Array, b: pa.Array, c: pa.Array, d: pa.Array, e: pa.Array, f: pa.Array, g: pa.Array,
              h: pa.Array, i: pa.Array, j: pa.Array, k: pa.Array) -> pa.StructArray:  # one per OFFER_INPUTS
        values = [col.to_pylist() for col in (a, b, c, d, e, f, g, h, i, j, k)]
        records = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        priced = [m or {} for m in money_rows(records, pricing)]
        arrays = [pa.array([m.get(n) for m in priced], typ) for n, typ in MONEY_COLUMNS]
        return pa.StructArray.from_arrays(arrays, names=list(MONEY_NAMES))

    con = catalog.connect()
    try:
        con.execute("SET allowed_paths = ?", [catalog.files])
        types = {r[0]: r[1] for r in con.execute("DESCRIBE cat").fetchall()}
        struct = duckdb.struct_type({n: _duck_type(t) for n, t in MONEY_COLUMNS})
        con.create_function("maas_money", money, [duckdb.sqltype(types[n]) for n in names], struct, type="arrow",
                            null_handling="special",  # a null input (no cache measurement) is an input
                            side_effects=False)
        shown = [c for c in types if c not in MONEY_NAMES]
        plain = ", ".join(f's."{c}"' for c in shown)
        priced = ", ".join(f's.m."{n}" AS "{n}"' for n in MONEY_NAMES)
        args = ", ".join(f'cat."{n}"' for n in names)
        con.execute(f"CREATE VIEW points AS SELECT {plain}, {priced} FROM (SELECT cat.*, maas_money({args}) AS m "
                    "FROM cat) s")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()  # nothing else holds it: a failed setup must not leak the connection
        raise
    return con


def _duck_type(t: pa.DataType) -> Any:
    import duckdb

    return duckdb.sqltype("VARCHAR" if t == pa.string() else "DOUBLE")


@dataclass
class QueryResult:
    """A query's column names and rows (NaN / inf as None)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def run_query(catalog: Catalog, sql: str, pricing: CatalogPricing) -> QueryResult:
    """Run one read-only SELECT over the catalog's `points` view; bad SQL is one line (UserInputError)."""
    import duckdb

    check_read_only(sql)
    con = open_points(catalog, pricing)
    try:
        cur = con.execute(sql)
        rows = cur.fetchall()
        cols = [d[0] for d in cur.description]
    except duckdb.Error as e:
        raise UserInputError(f"query: {_first_line(e)}") from None
    finally:
        con.close()
    return QueryResult(cols, [tuple(_clean(v) for v in r) for r in rows])


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
